"""MCMC in noise space (workloads/outsourced/mcmc.py): MALA and HMC chains reach the closed-form noise-space posterior
of an affine generator under a log-linear r, their reward-evaluation counts are the rows the target evaluated, they
are deterministic in the seed, and the step size adapts during burn-in only."""

import pytest
import torch

from tests.test_outsourced_target import Affine
from workloads.outsourced.mcmc import MCMCConfig, hmc, run_chains
from workloads.outsourced.noise_target import NoiseSpaceTarget

A = torch.tensor([[1.0, 0.5, 0.0], [-0.3, 2.0, 0.4], [0.2, 0.0, 1.5]])
B = torch.tensor([0.2, -1.0, 0.5])
C = torch.tensor([0.8, -0.6, 0.7])
SHIFT = A.T @ C  # beta = 1: the posterior is N(A^T c, I); [1.12, -0.8, 0.81], away from the chains' N(0, I) start


class CountingTarget(NoiseSpaceTarget):
    """Counts the rows log_reward is evaluated on."""

    rows = 0

    def log_reward(self, z):
        self.rows += z.shape[0]
        return super().log_reward(z)


def _target(cls=NoiseSpaceTarget):
    return cls(Affine(A, B), lambda x: x @ C, beta=1.0, reference_samples=1_000)


@pytest.mark.parametrize("method", ["mala", "hmc"])
def test_chains_reach_the_closed_form_posterior(method):
    config = MCMCConfig(method=method, num_chains=2_000, num_steps=300, burn_in=100, step_size=0.05, record_every=100)
    snapshots = run_chains(_target(), config, seed=0)
    assert [s.step for s in snapshots] == [100, 200, 300]
    z = snapshots[-1].z
    assert z.shape == (2_000, 3)
    torch.testing.assert_close(z.mean(0), SHIFT, atol=0.1, rtol=0)
    torch.testing.assert_close(z.var(0), torch.ones(3), atol=0.15, rtol=0)
    assert abs(snapshots[-1].acceptance_rate - config.acceptance()) < 0.1
    torch.testing.assert_close(snapshots[-1].log_reward, _target().log_reward(z))


@pytest.mark.parametrize("method", ["mala", "hmc"])
def test_reward_evaluations_are_the_rows_evaluated(method):
    """num_steps = 70 in segments of 30: two full ones and a short one, each re-evaluating its start state."""
    config = MCMCConfig(method=method, num_chains=16, num_steps=70, burn_in=40, record_every=30, leapfrog_steps=4)
    target = _target(CountingTarget)
    seen = []
    snapshots = run_chains(target, config, seed=1, on_snapshot=lambda s: seen.append((s, target.rows)))
    assert [s for s, _ in seen] == snapshots
    assert [s.step for s in snapshots] == [30, 60, 70]
    for snapshot, rows in seen:
        assert snapshot.reward_evaluations * config.num_chains == rows
    per_step = 1 if method == "mala" else 4
    assert snapshots[-1].reward_evaluations == 3 + 70 * per_step  # the documented rule, against the counter above


def test_hmc_costs_one_plus_leapfrog_steps_per_step():
    target = _target(CountingTarget)
    z0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    hmc(target, z0, num_steps=6, burn_in=0, step_size=0.1, leapfrog_steps=7, generator=torch.Generator())
    assert target.rows == 8 * (1 + 6 * 7)


@pytest.mark.parametrize("method", ["mala", "hmc"])
def test_chains_are_deterministic_in_the_seed(method):
    config = MCMCConfig(method=method, num_chains=32, num_steps=40, burn_in=20, record_every=20)
    first, again, other = (run_chains(_target(), config, seed=s) for s in (5, 5, 6))
    for a, b in zip(first, again):
        assert torch.equal(a.z, b.z) and torch.equal(a.log_reward, b.log_reward)
        assert (a.step, a.reward_evaluations, a.acceptance_rate, a.step_size) == (
            b.step,
            b.reward_evaluations,
            b.acceptance_rate,
            b.step_size,
        )
    assert not torch.equal(first[-1].z, other[-1].z)
    assert first[0].step_size != other[0].step_size  # burn-in adapted on other draws


@pytest.mark.parametrize("method", ["mala", "hmc"])
def test_step_size_adapts_during_burn_in_only(method):
    """burn_in = 60 over segments of 20: the step size moves in each of the first three and not after."""
    config = MCMCConfig(method=method, num_chains=64, num_steps=100, burn_in=60, step_size=1e-4, record_every=20)
    sizes = [s.step_size for s in run_chains(_target(), config, seed=2)]
    assert sizes[0] > 100 * config.step_size
    assert sizes[0] != sizes[1] != sizes[2]
    assert sizes[2] == sizes[3] == sizes[4]
    assert sizes[2] > 0.1


def test_target_acceptance_defaults_by_method():
    assert MCMCConfig(method="mala").acceptance() == 0.574
    assert MCMCConfig(method="hmc").acceptance() == 0.65
    assert MCMCConfig(method="hmc", target_acceptance=0.8).acceptance() == 0.8
    with pytest.raises(ValueError):
        MCMCConfig(method="nuts")
