# Set-up and entry points. Works on a fresh machine with only Python 3.11.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0

.PHONY: run test install install-test bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: this exact version installs from a local CPU wheel.
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install --quiet -e '.[test,plot]'
	touch $@

install: $(VENV)/.base
install-test: $(VENV)/.test

run: install
	$(VENV)/bin/hmmtx verify --quick

test: install-test
	$(PY) -m pytest -q -p no:cacheprovider

bench: install-test
	$(VENV)/bin/hmmtx bench filter

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
