# ffsecure: two commands do everything.
#   make demo   sets up .venv and runs a whole local federation (ffsecure demo)
#   make test   sets up .venv and runs the default test suite
# Each target creates or updates the virtual environment it needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ffsecure-installed
LOCK   := requirements/lock.txt
DEMO_DIR ?= demo-out
FUZZ_RUNS ?= 20000

.PHONY: venv lock lint check-fresh chromium postgresql test test-all demo bench fuzz proto clean help

help:
	@echo "make demo      run a whole federation on this machine (writes $(DEMO_DIR)/)"
	@echo "make test      run the linters and the default test suite"
	@echo "make lint      ruff (format + lint) and mypy alone"
	@echo "make test-all  run every test, slow suites included"
	@echo "make bench     run the benchmarks and regenerate benchmarks/RESULTS.md"
	@echo "make lock      refresh requirements/lock.txt and the gRPC code (review, commit alone)"
	@echo "make check-fresh  clone HEAD into a temporary folder and install it from the lock"
	@echo "make fuzz      run each fuzz harness for a while (FUZZ_RUNS=$(FUZZ_RUNS))"

venv: $(STAMP)

# The environment is installed from requirements/lock.txt alone: exact
# versions and sha256 hashes of every package (PyTorch included), no
# resolution at install time. pip-sync then removes whatever the lock does not
# name, the project is installed editable against the locked setuptools, and
# scripts/check_lock.py refuses an environment that differs from the lock.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "requirements/lock.txt is for CPython 3.11 on Linux x86-64; run make with PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r $(LOCK)
	$(VENV)/bin/pip-sync --quiet --pip-args "--no-deps" $(LOCK)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PY) scripts/check_lock.py $(LOCK)
	touch $(STAMP)

# Refresh the lock from pyproject.toml and requirements/lock.in (newest
# versions within their ranges), reinstall from it, and regenerate the gRPC
# code with the newly locked grpcio-tools. Review and commit the result on
# its own.
lock: venv
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --upgrade \
	    --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	    --no-emit-find-links --extra dev -o $(LOCK) pyproject.toml requirements/lock.in
	$(MAKE) venv
	PYTHON=$(PY) bash scripts/gen_proto.sh

# What a new user gets: a clone of the committed HEAD in an empty folder, a
# venv made from the lock with pip's cache disabled, then the CLIs' --version
# and one quick command (tests/fresh/test_fresh_clone.py runs the same in
# `make test-all`).
check-fresh:
	$(PYTHON) scripts/check_fresh.py

# Headless Chromium renders the audit report in its browser test; the script
# installs Debian's package when it can and otherwise says how (the test is
# then skipped, nothing else needs a browser).
chromium:
	-@sh scripts/ensure-chromium.sh

# The PostgreSQL store tests start a throwaway server (initdb + pg_ctl from
# Debian's postgresql package); the script installs it when it can and
# otherwise says how (those tests are then skipped with that message).
postgresql:
	-@sh scripts/ensure-postgresql.sh

# ruff (format and lint rules in pyproject.toml) and mypy (strict on the
# parsers of signed and sealed bytes, ordinary elsewhere) over the tree.
lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: venv chromium postgresql lint
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: venv chromium postgresql
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
