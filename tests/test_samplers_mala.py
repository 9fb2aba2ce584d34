"""MALA local search: step-size adaptation to the target acceptance and correct stationary moments."""
import math

import torch

from workloads.samplers.local_search import mala
from workloads.samplers.targets import make_target
from workloads.samplers.targets.base import Target


class StdGaussian(Target):
    dim = 4
    log_z = 0.5 * 4 * math.log(2 * math.pi)

    def __init__(self):
        super().__init__()
        self.register_buffer("zero", torch.zeros(()))

    def log_reward(self, x):
        return -0.5 * (x**2).sum(-1)

    def sample(self, n, seed):
        return torch.randn(n, self.dim, generator=torch.Generator().manual_seed(seed))


def test_mala_standard_gaussian_acceptance_and_moments():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2000, 4, generator=g) * 3 + 1  # over-dispersed start
    res = mala(StdGaussian(), x0, num_steps=300, burn_in=150, step_size=0.01, target_acceptance=0.574, generator=g)
    assert res.x.shape == (2000, 4)
    assert abs(res.acceptance_rate - 0.574) < 0.05
    assert res.step_size > 0.1  # adapted up from 0.01
    assert res.x.mean(0).abs().max() < 0.1
    assert (res.x.var(0) - 1).abs().max() < 0.15
    assert torch.allclose(res.log_reward, -0.5 * (res.x**2).sum(-1))


def test_mala_keeps_gmm25_samples_in_modes():
    target = make_target("gmm25")
    x0 = target.sample(500, seed=0)
    res = mala(target, x0, 100, 50, 0.01, generator=torch.Generator().manual_seed(1))
    resid = res.x - 5.0 * torch.round(res.x / 5.0)
    assert abs(resid.var().item() - 0.3) < 0.05
    assert 0.4 < res.acceptance_rate < 0.75
