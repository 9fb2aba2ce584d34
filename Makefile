# Two commands do all set-up on a new machine (see README.md):
#   make run    the main job: a real sweep on an embedded local Ray, logged to ./mlflow.db
#   make test   lint (ruff check, ruff format --check), then the test suite
# Both create (or reuse) the virtual environment .venv from pyproject.toml.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
SWEEP ?= sweeps/torsional.yaml
export MLFLOW_DISABLE_TELEMETRY := true

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

.PHONY: setup run smoke ui ui-check test test-slow test-study test-py312 lint format validate device-wheels
setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(PYTHON) -m orchestrator run $(SWEEP)

smoke: $(VENV)/.installed
	$(PYTHON) -m orchestrator run $(SWEEP) --smoke

# The MLflow UI on this machine only (loopback), over the store `make run` writes.
ui: $(VENV)/.installed
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

# The MLflow UI as a researcher sees it, in headless Chromium (apt-get install chromium): a smoke sweep, its pages
# rendered and checked; pages, screenshots and the store in ./ui-check (tests/ui_check.py).
ui-check: $(VENV)/.installed
	$(PYTHON) -m tests.ui_check --smoke sweeps/torsional.yaml --out ui-check

validate: $(VENV)/.installed
	$(PYTHON) -m orchestrator validate sweeps/*.yaml

# Two pytest-xdist workers, a whole test module each at a time (a module shares one local Ray): most tests keep
# one core busy (torch on one thread), so two at once halve the time on 2 cores (docs/runtime.md).
test: lint
	$(PYTHON) -m pytest -q -n 2 --dist loadfile

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The long checks (CI runs them after `make test`). RAY_AUTH_MODE=token: every Ray they start has token
# authentication on, whatever the environment says; the tests that start a cluster give it a token of their own.
test-slow: $(VENV)/.installed
	RAY_AUTH_MODE=token $(PYTHON) -m pytest -q -m slow

# The convergence studies (each many minutes on one core; docs/runtime.md): a trained sampler against an exact
# answer. Not in CI (its 90 minutes hold make test, test-slow and test-py312); run them after changing a learner.
test-study: $(VENV)/.installed
	$(PYTHON) -m pytest -q -m study

# Python 3.12 (the GPU machines' version): the same install in its own venv, and the checks that import every
# module and run every family's trial. PYTHON312 defaults to a python3.12 on the PATH, else pyenv's.
PYTHON312 ?= $(shell for p in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && echo $$p && break; done)
test-py312:
	@test -n "$(PYTHON312)" || { echo "test-py312: no Python 3.12 found (set PYTHON312=...)"; exit 1; }
	test -x .venv312/bin/python || $(PYTHON312) -m venv .venv312
	.venv312/bin/python -m pip install --quiet -e '.[test]'
	.venv312/bin/python -m pytest -q tests/test_layout.py tests/test_spec.py tests/test_tuner.py \
		tests/test_objectives.py tests/test_behaviour_unchanged.py tests/test_cli.py

# The wheels that a lent GPU machine lacks (it has PyTorch with CUDA, no network, Python 3.12), for
# cluster/gpu_check.sh; the versions are those this project runs with, OpenMM's the newest built for 3.12.
DEVICE_WHEELS := rdkit==2026.9.1 openmm==8.3.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
	typing-inspection==0.4.5
device-wheels:
	for wheel in $(DEVICE_WHEELS); do python3 -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $$wheel || exit 1; done
