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


def test_mala_keeps_every_accepted_post_burn_in_proposal():
    """keep_accepted returns the accepted proposals of the steps after burn-in, as the reference's local search:
    as many as the post-burn-in acceptance rate says, each with its own log R, the chains' final states among
    them; the chains themselves run exactly as without it."""
    x0 = torch.randn(500, 4, generator=torch.Generator().manual_seed(0)) * 2
    kept = mala(StdGaussian(), x0, 60, 20, 0.3, generator=torch.Generator().manual_seed(1), keep_accepted=True)
    plain = mala(StdGaussian(), x0, 60, 20, 0.3, generator=torch.Generator().manual_seed(1))
    assert plain.accepted_x is None and torch.equal(kept.x, plain.x)
    assert len(kept.accepted_x) == round(kept.acceptance_rate * 500 * (60 - 20))
    assert 0.3 < kept.acceptance_rate < 0.95 and len(kept.accepted_x) > 500
    assert torch.allclose(kept.accepted_log_reward, -0.5 * (kept.accepted_x**2).sum(-1))
    moved = (kept.x != x0).any(-1)  # chains that accepted at some step; a step's acceptances are all distinct
    last = {tuple(row.tolist()) for row in kept.accepted_x}
    assert all(tuple(row.tolist()) in last for row in kept.x[moved])
