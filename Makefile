# Development entry points. `make demo` and `make test` first create or update the virtual
# environment, so on a fresh machine they are the only commands needed.

PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.edgeserving-installed
RUN_ISOLATED := tools/run-isolated
PYTEST_ARGS ?=

.PHONY: venv demo test lint clean-shm

venv: $(STAMP)

$(STAMP): requirements.txt setup.py package.xml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -r requirements.txt
	$(VENV_PYTHON) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: venv
	$(RUN_ISOLATED) $(VENV_PYTHON) -m edgeserving_ros.demo

test: venv
	$(RUN_ISOLATED) $(VENV_PYTHON) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV_PYTHON) -m flake8 edgeserving_ros test launch
