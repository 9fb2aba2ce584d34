"""The device check of the learner path (`orchestrator.families.torsional.benchmark_device`, run by
cluster/gpu_check.sh on a GPU machine): it finds a tensor that is not on the learner's device. Here only the CPU
exists, so the misplaced tensor is put on the meta device."""

from __future__ import annotations

import torch

from orchestrator.families.torsional.benchmark_device import tensors_off_device
from workloads.torsional.config import TorsionalConfig
from workloads.torsional.learner import TorsionalLearner


def test_a_tensor_off_the_learners_device_is_named(tmp_path):
    learner = TorsionalLearner(TorsionalConfig(cache_dir=str(tmp_path)).smoke(), seed=0)
    assert tensors_off_device(learner) == []
    learner.policy.register_buffer("stray", torch.zeros(3, device="meta"))
    learner.torch_energy.stray = torch.zeros(3, device="meta")  # a plain object's tensor attribute
    assert tensors_off_device(learner) == ["policy.stray on meta", "torch_energy.stray on meta"]
