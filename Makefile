# Two commands do all set-up on a fresh machine:
#   make report   verify every case in cases/ and write reports/latest/
#   make test     run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: report test lint venv clean browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/hessverify verify cases --report reports/latest

# lint-imports: the layering contracts of pyproject.toml ([tool.importlinter], docs/architecture.md)
test: $(STAMP) browser
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n 2

# Headless chromium for the browser test of report.html (tests/reports/test_html.py skips without it).
# Installs Debian's chromium when missing and we are root; otherwise says how, and the test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -q && apt-get install -y -q chromium) >/dev/null || \
		echo "make browser: could not install chromium; the browser test will be skipped"; \
	else \
		echo "make browser: chromium is missing (sudo apt-get install chromium); the browser test will be skipped"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) reports/latest
