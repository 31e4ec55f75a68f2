# Two commands do all set-up on a fresh machine:
#   make report   verify every case in cases/ and write reports/latest/
#   make test     run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: report test lint venv clean browser frameworks distributed conformance

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/hessverify verify cases --report reports/latest

# lint-imports: the layering contracts of pyproject.toml ([tool.importlinter], docs/architecture.md)
test: $(STAMP) browser frameworks distributed
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n 2

# The CPU builds of the optional frameworks, so the adapter and conformance tests (tests/test_torch.py,
# tests/test_jax.py, tests/test_conformance.py) run in CI; torch pinned exactly in the same command (a bare
# `torch`, or backpack/curvlinops alone, would fetch gigabytes of CUDA). Without them those tests skip.
# Extras: hessverify[torch], hessverify[jax], hessverify[conformance].
FRAMEWORKS := $(VENV)/.frameworks
frameworks: $(FRAMEWORKS)

$(FRAMEWORKS): $(STAMP)
	$(BIN)/python -m pip install --quiet 'torch==2.13.0' 'jax>=0.4.30' backpack-for-pytorch curvlinops-for-pytorch || \
		echo "make frameworks: could not install the frameworks; the adapter and conformance tests will be skipped"
	touch $(FRAMEWORKS)

# Dask, for `hessverify campaign` and its tests (tests/campaign/, which skip without it): the extra
# hessverify[distributed]. Optional like the frameworks: a failed install is said, not fatal.
DISTRIBUTED := $(VENV)/.distributed
distributed: $(DISTRIBUTED)

$(DISTRIBUTED): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[distributed]' || \
		echo "make distributed: could not install Dask; the campaign tests will be skipped"
	touch $(DISTRIBUTED)

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

# The full conformance table (docs/conformance.md): the libraries' own second-order code on 100 problems
# per quantity. Exit 1 (a library disagreed or raised) is a finding, reported in the table, not a failed build.
conformance: $(STAMP) frameworks
	$(BIN)/hessverify conformance --library torch.func jax backpack curvlinops --examples 100 --seed 0 --report reports/conformance; \
		status=$$?; [ $$status -le 1 ]
	$(BIN)/hessverify conformance --library torch.func jax backpack curvlinops --examples 100 --seed 0 --precision float32 \
		--report reports/conformance-float32; status=$$?; [ $$status -le 1 ]

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) reports/latest
