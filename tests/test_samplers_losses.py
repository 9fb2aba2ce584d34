"""The diffusion sampler's own part of its losses: the intermediate target of FL-SubTB (DGFS). (The objectives'
properties: test_objectives.py; SubTB / FL-SubTB / PIS on the SDE: test_samplers_objectives.py.)"""

import torch

from workloads.samplers.losses import intermediate_log_reward


def test_intermediate_log_reward_interpolates_from_the_reference_to_the_target():
    g = torch.Generator().manual_seed(0)
    log_p_ref, log_r = torch.randn(4, 9, generator=g) * 3, torch.randn(4, 9, generator=g) * 3  # [B, T-1]
    assert torch.allclose(intermediate_log_reward(log_p_ref, log_r, torch.zeros(9)), log_p_ref)
    assert torch.allclose(intermediate_log_reward(log_p_ref, log_r, torch.ones(9)), log_r)
    t = torch.linspace(0.1, 0.9, 9)  # [T-1], broadcast over the batch
    expected = torch.stack([(1 - t[i]) * log_p_ref[:, i] + t[i] * log_r[:, i] for i in range(9)], dim=1)
    assert torch.allclose(intermediate_log_reward(log_p_ref, log_r, t), expected)
