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

.PHONY: venv test test-all demo bench proto clean help

help:
	@echo "make demo      run a whole federation on this machine (writes $(DEMO_DIR)/)"
	@echo "make test      run the default test suite"
	@echo "make test-all  run every test, slow suites included"
	@echo "make bench     run the benchmarks and regenerate benchmarks/RESULTS.md"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# PyTorch first, from the versions this project is tested with.
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

test: venv
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: venv
	$(PY) -m pytest -m "not gpu" -q

demo: venv
	$(VENV)/bin/ffsecure demo --workdir $(DEMO_DIR)

bench: venv
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
