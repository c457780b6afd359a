# Set-up and main commands. Everything installs into .venv on first use.
# Python 3.12 is required (brian2 2.10.1); PYTHON may be overridden: make test PYTHON=/path/to/python3.12
PYTHON ?= $(shell PYENV_VERSION=3.12.1 python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null || command -v python3.12)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The datasets: $(BRAINSNN_DATA) if set, else ../shared/data beside this clone when it exists.
SHARED_DATA := $(abspath ../shared/data)
export BRAINSNN_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: install run test test-slow clean

$(STAMP): setup.py
	@test -n "$(PYTHON)" || { echo "Python 3.12 not found: install it or pass PYTHON=/path/to/python3.12" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The main job: Diehl & Cook STDP network on MNIST at its default scale (--resume: a second
# `make run` finds the run complete; an interrupted one continues).
run: $(STAMP)
	$(VENV)/bin/brainsnn run diehl_cook --resume

# Fast tests (the default; what CI runs).
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Slow tests (long simulations, compiled devices end to end).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
