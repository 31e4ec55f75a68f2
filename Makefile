# Two commands do all set-up on a fresh machine:
#   make report   verify every case in cases/ and write reports/latest/
#   make test     run the test suite (make test-fast: without the slow tests, while developing)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: report test test-fast lint venv clean browser frameworks distributed conformance tensorflow

venv: $(STAMP)

# pip prints a line per package (and a bar on a terminal): the install takes minutes and should say so
$(STAMP): pyproject.toml
	@echo "make: creating $(VENV) and installing hessverify with its dev dependencies (a few minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/hessverify verify cases --report reports/latest

# lint-imports: the layering contracts of pyproject.toml ([tool.importlinter], docs/architecture.md)
test: $(STAMP) browser frameworks distributed
	$(BIN)/lint-imports --no-cache
	HESSVERIFY_SLOW=1 $(BIN)/python -m pytest -q -n 2

# While developing: the suite without the tests marked slow and without the notebooks (a few minutes less).
# CI runs `make test`, everything: HESSVERIFY_SLOW=1 runs the slow tests, which a bare pytest skips
# (tests/symbolic/conftest.py).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests hessverify

# The CPU builds of the optional frameworks, so the adapter and conformance tests (tests/test_torch.py,
# tests/test_jax.py, tests/test_conformance.py) run in CI; torch pinned exactly in the same command (a bare
# `torch`, or backpack/curvlinops alone, would fetch gigabytes of CUDA). Without them those tests skip.
# Extras: hessverify[torch], hessverify[jax], hessverify[conformance]; python-flint (hessverify[certified]) for the
# certified reference, whose tests (tests/references/test_certified.py) skip without it.
FRAMEWORKS := $(VENV)/.frameworks
frameworks: $(FRAMEWORKS)

$(FRAMEWORKS): $(STAMP)
	@echo "make: installing the CPU builds of torch and jax (with equinox, flax and optax), backpack, curvlinops and psgd (a few minutes)"
	$(BIN)/python -m pip install 'torch==2.13.0' 'jax>=0.4.30' 'equinox>=0.11' 'flax>=0.10' 'optax>=0.2' \
		backpack-for-pytorch curvlinops-for-pytorch 'psgd-torch==0.6.1' || \
		echo "make frameworks: could not install the frameworks; the adapter and conformance tests will be skipped"
	$(BIN)/python -m pip install --quiet 'python-flint>=0.6' || \
		echo "make frameworks: could not install python-flint; the certified reference's tests will be skipped"
	$(MAKE) --no-print-directory tensorflow
	touch $(FRAMEWORKS)

# TensorFlow Probability for the lab's tfp-bfgs and tfp-lbfgs (hessverify[tensorflow]; tests/apps/test_lab_library.py
# skips without it). The trap: tf-keras (which TFP 0.25 imports) requires the full `tensorflow` wheel (572 MB), not
# tensorflow-cpu, and TFP's `tf` extra does too; so both go in with --no-deps after tensorflow-cpu, and TFP's own
# small dependencies are named by hand (dm-tree, decorator, cloudpickle, gast). Pins move together: tf-keras's
# version must equal TensorFlow's (2.21), and TFP 0.25 is the release for it.
TF_PINS := 'tensorflow-cpu==2.21.0'
TF_NODEPS := 'tf-keras==2.21.0' 'tensorflow-probability==0.25.0'
TF_SMALL := 'dm-tree' 'decorator' 'cloudpickle' 'gast'
tensorflow: $(STAMP)
	@echo "make: installing tensorflow-cpu and TensorFlow Probability (hessverify[tensorflow], a few minutes)"
	( $(BIN)/python -m pip install $(TF_PINS) $(TF_SMALL) && \
	  $(BIN)/python -m pip install --no-deps $(TF_NODEPS) ) || \
		echo "make tensorflow: could not install TensorFlow Probability; the tfp-bfgs and tfp-lbfgs tests will be skipped"

# Dask, for `hessverify campaign` and its tests (tests/campaign/, which skip without it): the extra
# hessverify[distributed]. Optional like the frameworks: a failed install is said, not fatal.
DISTRIBUTED := $(VENV)/.distributed
distributed: $(DISTRIBUTED)

$(DISTRIBUTED): $(STAMP)
	@echo "make: installing Dask (hessverify[distributed])"
	$(BIN)/python -m pip install -e '.[distributed]' || \
		echo "make distributed: could not install Dask; the campaign tests will be skipped"
	touch $(DISTRIBUTED)

# Headless chromium for the browser test of report.html (tests/reports/test_html.py skips without it).
# Installs Debian's chromium when missing and we are root; otherwise says how, and the test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		echo "make: installing chromium for the browser test of report.html"
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
	$(BIN)/hessverify conformance --library tensorflow --examples 20 --seed 0 --report reports/conformance-tensorflow; \
		status=$$?; [ $$status -le 1 ]
	$(BIN)/hessverify conformance --library tensorflow --examples 20 --seed 0 --precision float32 \
		--report reports/conformance-tensorflow-float32; status=$$?; [ $$status -le 1 ]

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) reports/latest
