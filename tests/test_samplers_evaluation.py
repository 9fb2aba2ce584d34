"""Evaluation metrics and figures of SamplerLearner.evaluate.

The known answer: target R = N(0, sigma^2 I) (log Z = 0) and a sampler with constant drift c, whose
terminal marginal is q = N(c, sigma^2 I) and whose backward process is exactly the Brownian bridge PB
(a constant drift does not change the bridge), so per trajectory log PF - log PB = log q(x):
    ELBO = -KL(q || p) = -|c|^2 / (2 sigma^2),   EUBO = KL(p || q) = |c|^2 / (2 sigma^2),
    exact_log_likelihood = mean over exact x of log q(x)     (every K gives it exactly).
c = 0 is the optimal sampler: ELBO = EUBO = log Z = 0 for every trajectory."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from workloads.samplers.config import SamplerConfig
from workloads.samplers.learner import EXACT_SAMPLES_SEED_OFFSET, SamplerLearner
from workloads.samplers.metrics import eubo, log_importance_weights, log_likelihood, log_z_metrics, w1, w2
from workloads.samplers.targets.base import Target

SIGMA2 = 5.0
N = 500
EVAL_METRICS = {
    "eval/delta_log_z",
    "eval/delta_log_z_rw",
    "eval/log_z_learned",
    "eval/elbo",
    "eval/log_z_rw",
    "eval/eubo",
    "eval/w2",
    "eval/w1",
    "eval/exact_log_likelihood",
}


class Gaussian(Target):
    """R(x) = N(x; 0, s2 I), log Z = 0."""

    dim = 2
    log_z = 0.0

    def __init__(self, s2: float):
        super().__init__()
        self.s2 = s2

    def log_reward(self, x):
        return Normal(0.0, math.sqrt(self.s2)).log_prob(x).sum(-1)

    def sample(self, n, seed):
        return torch.randn(n, self.dim, generator=torch.Generator().manual_seed(seed)) * math.sqrt(self.s2)


def _gaussian_learner(drift: tuple[float, float], K: int = 4) -> SamplerLearner:
    """A learner on R = N(0, sigma^2 I) whose drift is the constant `drift` (zero weights, bias = drift)."""
    config = SamplerConfig(
        num_steps=10, sigma2=SIGMA2, hidden_dim=16, time_embedding_dim=8, eval_samples=N, eval_backward_trajectories=K
    )
    learner = SamplerLearner(config, seed=0)
    learner.target = Gaussian(SIGMA2)
    with torch.no_grad():
        learner.policy.nn1.out.bias.copy_(torch.tensor(drift))
    return learner


def _exact_samples(learner: SamplerLearner, n: int = N) -> torch.Tensor:
    return learner.target.sample(n, seed=learner.seed + EXACT_SAMPLES_SEED_OFFSET)


def test_log_likelihood_is_logmeanexp_over_the_backward_trajectories():
    log_pf = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])  # [N=2, K=2]
    log_pb = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    # row 0: log((1 + 3) / 2); row 1: -2 (equal ratios)
    assert torch.allclose(log_likelihood(log_pf, log_pb), torch.tensor([math.log(2.0), -2.0], dtype=torch.float64))
    assert log_likelihood(log_pf[:, :1], log_pb[:, :1]).tolist() == [0.0, -2.0]  # K = 1: the ratio itself
    assert math.isclose(eubo(torch.tensor([[1.0, 2.0], [3.0, 6.0]])), 3.0)  # mean over x and k


def test_optimal_sampler_has_zero_log_z_errors_and_the_target_log_likelihood():
    learner = _gaussian_learner(drift=(0.0, 0.0))
    m = learner.evaluate().metrics
    assert set(m) == EVAL_METRICS
    for key in ("eval/elbo", "eval/eubo", "eval/delta_log_z", "eval/delta_log_z_rw", "eval/log_z_rw"):
        assert abs(m[key]) < 1e-3, (key, m[key])  # exact per trajectory, not only on average
    log_p = learner.target.log_reward(_exact_samples(learner))  # [N] log N(x; 0, sigma^2 I)
    assert abs(m["eval/exact_log_likelihood"] - log_p.mean().item()) < 1e-3
    # and the analytic E log p = -D/2 log(2 pi e sigma^2), within 4 standard errors (std of log p: sqrt(D/2) = 1)
    assert abs(m["eval/exact_log_likelihood"] + math.log(2 * math.pi * math.e * SIGMA2)) < 4 / math.sqrt(N)


def test_constant_drift_sampler_has_the_analytic_elbo_eubo_and_log_likelihood():
    c = torch.tensor([2.0, -1.0])
    kl = c.pow(2).sum().item() / (2 * SIGMA2)  # 0.5 = KL(q || p) = KL(p || q)
    learner = _gaussian_learner(drift=tuple(c.tolist()), K=3)
    m = learner.evaluate().metrics
    # log w is linear in x with std |c| / sigma = 1: 4 standard errors of the mean
    assert abs(m["eval/elbo"] + kl) < 4 / math.sqrt(N), m["eval/elbo"]
    assert abs(m["eval/eubo"] - kl) < 4 / math.sqrt(N), m["eval/eubo"]
    assert abs(m["eval/delta_log_z"] - kl) < 4 / math.sqrt(N)
    assert m["eval/delta_log_z_rw"] < m["eval/delta_log_z"]  # the reweighted estimate is tighter
    log_q = Normal(c, math.sqrt(SIGMA2)).log_prob(_exact_samples(learner)).sum(-1)  # [N] the sampler's density
    assert abs(m["eval/exact_log_likelihood"] - log_q.mean().item()) < 1e-3
    # not the target's density: they differ by E_p[log p - log q] = KL(p || q) = 0.5
    assert m["eval/exact_log_likelihood"] < learner.target.log_reward(_exact_samples(learner)).mean().item() - 0.4


@pytest.mark.parametrize("chunk_trajectories", [7, 3, 10_000])
def test_backward_rollouts_in_chunks_keep_each_state_with_its_trajectories(chunk_trajectories):
    c = (2.0, -1.0)
    K = 3
    learner = _gaussian_learner(drift=c, K=K)
    x = _exact_samples(learner, 11)  # [11, 2]; 7 // 3 = 2 states per chunk, the last chunk short
    log_pf, log_pb = learner.backward_log_probs(x, K, torch.Generator().manual_seed(0), chunk_trajectories)
    assert log_pf.shape == log_pb.shape == (11, K)
    log_q = Normal(torch.tensor(c), math.sqrt(SIGMA2)).log_prob(x).sum(-1)  # [11]
    assert torch.allclose(log_pf - log_pb, log_q[:, None].expand(11, K), atol=1e-3)
    assert not torch.allclose(log_pf[:, 0], log_pf[:, 1])  # K distinct trajectories per state


def test_w1_and_w2_are_reported_against_the_exact_samples():
    learner = _gaussian_learner(drift=(2.0, -1.0))
    ev = learner.evaluate(300)
    exact = _exact_samples(learner, 300).numpy()
    assert ev.metrics["eval/w1"] == w1(ev.samples, exact) and ev.metrics["eval/w2"] == w2(ev.samples, exact)
    assert ev.metrics["eval/w1"] < ev.metrics["eval/w2"]  # a shift of |c| = 2.2 plus noise, two different couplings
    assert 1.5 < ev.metrics["eval/w1"] < 3.5


@pytest.mark.parametrize(
    "target, figure, labels",
    [
        ("gmm25", "samples", None),
        ("gmm40", "samples", None),
        ("funnel", "marginals", ["x0", "x1"]),
        ("manywell", "marginals", ["x1 (first well)", "x2 (first well)"]),
    ],
)
def test_evaluation_figures_per_target(target, figure, labels):
    config = SamplerConfig(
        target=target, num_steps=5, hidden_dim=16, time_embedding_dim=8, eval_samples=200, eval_backward_trajectories=2
    )
    ev = SamplerLearner(config, seed=0).evaluate()
    assert set(ev.figures) == {figure}
    axes = ev.figures[figure].axes
    if labels is None:  # samples over filled contours of log R
        assert len(axes) == 1 and axes[0].collections
    else:  # one histogram pair (exact, sampler) per coordinate
        assert [ax.get_xlabel() for ax in axes] == labels
        assert all(len(ax.patches) > 2 for ax in axes)
    assert all(np.isfinite(v) for v in ev.metrics.values()), ev.metrics
    if target == "manywell":  # the untrained sampler is Brownian motion, symmetric in every a_j: half in each mode
        assert abs(ev.metrics["eval/minor_mode_fraction"] - 0.5) < 0.05
        assert abs(ev.metrics["eval/exact_minor_mode_fraction"] - 0.156) < 0.03
    else:
        assert not any("mode_fraction" in name for name in ev.metrics)


def test_log_z_estimates_may_take_more_samples_than_the_other_metrics():
    learner = _gaussian_learner(drift=(2.0, -1.0))
    learner.config = learner.config.model_copy(update={"log_z_eval_samples": 4 * N})
    ev = learner.evaluate()
    g = torch.Generator().manual_seed(learner.seed * 1_000_033 + learner.step)  # evaluate's own draw
    traj, log_r = learner.sample(4 * N, g)
    m = log_z_metrics(log_importance_weights(log_r, traj.log_pf, traj.log_pb), learner.target.log_z)
    assert ev.metrics["eval/delta_log_z_rw"] == m["delta_log_z_rw"] and ev.metrics["eval/elbo"] == m["elbo"]
    np.testing.assert_array_equal(ev.samples, traj.terminal[:N].numpy())  # W2, W1 and figures: the first N
    assert ev.metrics["eval/w2"] == w2(ev.samples, _exact_samples(learner).numpy())
    assert _gaussian_learner(drift=(2.0, -1.0)).evaluate().metrics["eval/elbo"] != ev.metrics["eval/elbo"]
