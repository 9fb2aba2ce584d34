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

.PHONY: setup run smoke test test-slow validate device-wheels
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

# The wheels that a lent GPU machine lacks (it has PyTorch with CUDA, no network, Python 3.12), for
# cluster/gpu_check.sh; the versions are those this project runs with, OpenMM's the newest built for 3.12.
DEVICE_WHEELS := rdkit==2026.9.1 openmm==8.3.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
	typing-inspection==0.4.5
device-wheels:
	for wheel in $(DEVICE_WHEELS); do python3 -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $$wheel || exit 1; done
