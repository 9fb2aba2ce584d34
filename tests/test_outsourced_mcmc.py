"""MCMC in noise space (workloads/outsourced/mcmc.py): MALA and HMC chains reach the closed-form noise-space posterior
of an affine generator under a log-linear r, their reward-evaluation counts are the rows the target evaluated, they
are deterministic in the seed, do not depend on how their steps are split into segments or on a save and load
between two, and the step size adapts during burn-in only."""

import pytest
import torch

from tests.test_outsourced_target import Affine
from workloads.outsourced.config import OutsourcedConfig
from workloads.outsourced.mcmc import ChainsConfig, MCMCChains, MCMCConfig, hmc, run_chains
from workloads.outsourced.mcmc_learner import MCMCLearner
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
    """num_steps = 70 in segments of 30: two full ones and a short one, the start states evaluated once (each
    segment starts from the last one's log R and gradient)."""
    config = MCMCConfig(method=method, num_chains=16, num_steps=70, burn_in=40, record_every=30, leapfrog_steps=4)
    target = _target(CountingTarget)
    seen = []
    snapshots = run_chains(target, config, seed=1, on_snapshot=lambda s: seen.append((s, target.rows)))
    assert [s for s, _ in seen] == snapshots
    assert [s.step for s in snapshots] == [30, 60, 70]
    for snapshot, rows in seen:
        assert snapshot.reward_evaluations * config.num_chains == rows
    per_step = 1 if method == "mala" else 4
    assert snapshots[-1].reward_evaluations == 1 + 70 * per_step  # the documented rule, against the counter above


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
def test_segments_and_a_restore_in_between_change_nothing(method):
    """40 steps as one segment, as 3 + 17 + 20, and as 25 with the chains then loaded into new ones (a restarted
    chain actor) for 15 more: the same states, step size and reward evaluations."""
    config = ChainsConfig(method=method, num_chains=24, burn_in=10, leapfrog_steps=3)
    whole = MCMCChains(_target(), config, seed=3).advance(40)
    split = MCMCChains(_target(), config, seed=3)
    for steps in (3, 17, 20):
        in_segments = split.advance(steps)
    first = MCMCChains(_target(), config, seed=3)
    first.advance(25)
    restored = MCMCChains(_target(), config, seed=99)
    restored.load_state_dict(first.state_dict())
    after_restore = restored.advance(15)
    for other in (in_segments, after_restore):
        torch.testing.assert_close(other.z, whole.z, rtol=0, atol=0)
        assert (other.step, other.step_size, other.reward_evaluations) == (
            40,
            whole.step_size,
            whole.reward_evaluations,
        )
    assert whole.reward_evaluations == 1 + 40 * config.evaluations_per_step()


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


def test_mcmc_learner_evaluates_the_thinned_states_at_their_cost():
    """As a trial's learner: 25 MALA steps of 32 chains kept every 10 steps (steps 10 and 20), the evaluation's
    samples the newest kept states first; the evaluations are the chains' 1 + 25 each; train's segments and a
    save and load leave the chains as one uninterrupted run leaves them."""
    config = OutsourcedConfig(method="mcmc", mcmc={"thin": 10}).smoke()  # 32 chains, burn-in 5
    config = config.model_copy(update={"eval_samples": 40})
    learner = MCMCLearner(config, seed=4)
    learner.train(7)
    state = learner.state_dict()
    learner.train(18)
    evaluation = learner.evaluate()
    assert evaluation.samples.shape == (40, 2)  # ceil(40 / 32) = 2 kept states: step 20's 32, then 8 of step 10's
    assert evaluation.metrics["eval/reward_evaluations"] == 32 * (1 + 25)
    assert 0 <= evaluation.metrics["eval/tv_to_exact"] <= 1
    whole = MCMCChains(learner.target, config.mcmc, seed=4)
    kept = [whole.advance(10).z, whole.advance(10).z]
    last = whole.advance(5)
    torch.testing.assert_close(learner.snapshot.z, last.z, rtol=0, atol=0)
    torch.testing.assert_close(torch.as_tensor(evaluation.samples), torch.cat([kept[1], kept[0][:8]]), rtol=0, atol=0)
    restored = MCMCLearner(config, seed=0, generator_state=learner.problem.state_dict())
    restored.load_state_dict(state)
    restored.train(18)
    torch.testing.assert_close(torch.as_tensor(restored.evaluate().samples), torch.as_tensor(evaluation.samples))
