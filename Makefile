# Two commands do all set-up on a new machine (see README.md):
#   make run    the main job: a real sweep on an embedded local Ray, logged to ./mlflow.db
#   make test   the test suite
# Both create (or reuse) the virtual environment .venv from pyproject.toml.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
SWEEP ?= sweeps/torsional.yaml
export MLFLOW_DISABLE_TELEMETRY := true

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

.PHONY: setup run smoke test test-slow validate
setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(PYTHON) -m orchestrator run $(SWEEP)

smoke: $(VENV)/.installed
	$(PYTHON) -m orchestrator run $(SWEEP) --smoke

validate: $(VENV)/.installed
	$(PYTHON) -m orchestrator validate sweeps/*.yaml

test: $(VENV)/.installed
	$(PYTHON) -m pytest -q

test-slow: $(VENV)/.installed
	$(PYTHON) -m pytest -q -m slow
