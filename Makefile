# ffsecure: two commands do everything.
#   make demo   sets up .venv and runs a whole local federation (ffsecure demo)
#   make test   sets up .venv and runs the default test suite
# Each target creates or updates the virtual environment it needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ffsecure-installed
DEMO_DIR ?= demo-out
FUZZ_RUNS ?= 20000

.PHONY: venv chromium test test-all demo bench fuzz proto clean help

help:
	@echo "make demo      run a whole federation on this machine (writes $(DEMO_DIR)/)"
	@echo "make test      run the default test suite"
	@echo "make test-all  run every test, slow suites included"
	@echo "make bench     run the benchmarks and regenerate benchmarks/RESULTS.md"
	@echo "make fuzz      run each fuzz harness for a while (FUZZ_RUNS=$(FUZZ_RUNS))"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# PyTorch first, from the versions this project is tested with.
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

# Headless Chromium renders the audit report in its browser test; the script
# installs Debian's package when it can and otherwise says how (the test is
# then skipped, nothing else needs a browser).
chromium:
	-@sh scripts/ensure-chromium.sh

test: venv chromium
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: venv chromium
	$(PY) -m pytest -m "not gpu" -q

demo: venv
	$(VENV)/bin/ffsecure demo --workdir $(DEMO_DIR)

bench: venv
	$(PY) -m benchmarks.run_all

fuzz: venv
	-$(PIP) install --quiet -e '.[dev,fuzz]'
	for t in $$($(PY) -m fuzz.run --list); do $(PY) -m fuzz.run --target $$t --runs $(FUZZ_RUNS) || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
