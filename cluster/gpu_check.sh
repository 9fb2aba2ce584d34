#!/usr/bin/env bash
# The prepared GPU check of the learner path, for a lent GPU machine: PyTorch with CUDA is there; RDKit, OpenMM
# and pydantic are not, and it has no network. Here, first: `make device-wheels` (into .whl/, ignored by git).
# Then run on the GPU machine from the repository root, carrying .whl:
#     bash cluster/gpu_check.sh          # about 5 minutes: install, smoke on cpu and cuda, then 30 timed iterations each
# It prints where the learner's tensors live, seconds per iteration on each device, the cuda/cpu ratio and the
# mean JSD per split after the timed iterations (orchestrator/families/torsional/benchmark_device.py).
set -euo pipefail
python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -m orchestrator.families.torsional.benchmark_device --devices cpu cuda --smoke --iters 5  # fails without a GPU
python3 -m orchestrator.families.torsional.benchmark_device --devices cpu cuda --iters "${ITERS:-30}"
