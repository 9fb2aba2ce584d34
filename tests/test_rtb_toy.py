"""RTB on the 2-D toy (workloads/rtb, arXiv:2405.20971) against exact answers: log r against a direct computation,
the exact posterior's mode weights, the Monte Carlo log Z on closed forms, the RTB loss at an exact posterior pair
(a tilted Brownian motion), relative VarGrad and clipping, the gradient through a subset of steps, mode masses and
TV on known mixtures; a short seeded prior fit + RTB run improves on the prior; checkpoints resume identically;
classifier guidance, DPS and the RL baselines run, DPS's drift against an independent Jacobian. One study test holds
RTB to the paper-level checks (`make test-study`)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from workloads.objectives import clipped_relative_tb_loss, relative_tb_loss, vargrad_loss
from workloads.rtb.config import RTBConfig
from workloads.rtb.guidance import GuidedPolicy, classifier_guidance, dps_guidance
from workloads.rtb.learner import RTBLearner
from workloads.rtb.losses import kl_regularized_advantage, reinforce_loss, reward_advantage
from workloads.rtb.metrics import exact_posterior, mode_masses, total_variation
from workloads.rtb.prior import GMM25_ENTROPY
from workloads.rtb.toy import NINE_MODE_MEANS, NINE_MODE_WEIGHTS, Toy2D
from workloads.rtb.trajectories import subset_gradient_log_pf
from workloads.samplers.policy import DriftPolicy
from workloads.samplers.sde import forward_log_prob, sample_backward, sample_forward

SMALL = {
    "num_steps": 50,
    "hidden_dim": 64,
    "time_embedding_dim": 32,
    "prior_iters": 800,
    "prior_batch_size": 128,
    "prior_lr": 3e-3,
    "batch_size": 128,
    "lr": 3e-3,
    "grad_clip": 10.0,
    "lr_schedule": "cosine",
    "eval_samples": 4_000,
    "w2_samples": 300,
    "prior_eval_samples": 20_000,
}
"""A small model whose prior is fitted in ~6 s on one thread; the tests share its fit (one prior key)."""


@pytest.fixture(scope="module")
def small_prior() -> dict:
    return RTBLearner(RTBConfig(**SMALL), seed=0).prior_state_dict()


# ---------------------------------------------------------------- the toy's exact quantities
def test_log_r_matches_a_direct_computation():
    task = Toy2D()
    g = torch.Generator().manual_seed(0)
    x = torch.cat([task.means, 24 * torch.rand(200, 2, generator=g) - 12])  # [225, 2], the means and around them
    xd = x.double().numpy()

    def mixture(means, weights):
        d2 = ((xd[:, None, :] - np.asarray(means)[None]) ** 2).sum(-1)  # [N, J]
        return (np.asarray(weights) * np.exp(-d2 / (2 * 0.3)) / (2 * np.pi * 0.3)).sum(-1)

    grid = [(a, b) for a in (-10, -5, 0, 5, 10) for b in (-10, -5, 0, 5, 10)]
    w9 = np.asarray(NINE_MODE_WEIGHTS) / sum(NINE_MODE_WEIGHTS)
    expected = np.log(mixture(NINE_MODE_MEANS, w9)) - np.log(mixture(grid, np.full(25, 1 / 25)))
    np.testing.assert_allclose(task.log_r(x).double().numpy(), expected, rtol=1e-4, atol=1e-4)
    # at a kept mode r = 25 w_j (the other components are ~e^-40 there); at a removed one it is ~e^-40
    kept_log_r = task.log_r(torch.tensor(NINE_MODE_MEANS))
    np.testing.assert_allclose(kept_log_r.numpy(), np.log(25 * w9), atol=1e-4)
    assert (task.log_r(task.means[~task.kept_modes]) < -35).all()


def test_exact_posterior_mode_weights():
    """N9's weights on the 25-mode grid; and the exact posterior of the TRUE prior, estimated by weighting exact
    GMM25 samples with r, is N9: its mode masses, log Z = log int N9 = 0 and E_post[log r] = E_N9[log r]."""
    task = Toy2D()
    masses = task.target_mode_masses
    assert task.kept_modes.sum() == 9 and masses[~task.kept_modes].abs().max() == 0
    for nu, w in zip(NINE_MODE_MEANS, NINE_MODE_WEIGHTS):
        k = task.mode_of(torch.tensor([nu]))[0]
        assert masses[k].item() == pytest.approx(w / 61, abs=1e-7)
    x = task.sample_prior(200_000, seed=1)
    log_r = task.log_r(x)
    exact = exact_posterior(x, log_r, 1.0, task.mode_of(x), 25, 10, torch.Generator().manual_seed(0))
    # MC standard errors at M = 200,000: log Z 0.004 (Var r = 2.6), each mass ~0.002
    assert abs(exact.log_z) < 0.015
    assert total_variation(exact.mode_masses, masses) < 0.02
    n9 = task.sample_target(200_000, seed=2)
    assert exact.mean_log_r == pytest.approx(task.log_r(n9).double().mean().item(), abs=0.02)


def test_monte_carlo_log_z_on_a_closed_form():
    """Prior N(0, s I), r(x) = exp(a.x): Z = E[r^beta] = exp(beta^2 s |a|^2 / 2), the posterior N(beta s a, s I)."""
    s, a, beta, M = 1.3, torch.tensor([0.5, -0.3]), 1.5, 200_000
    x = math.sqrt(s) * torch.randn(M, 2, generator=torch.Generator().manual_seed(0))
    modes = (x[:, 0] > 0).long()  # two "modes": the half-planes
    exact = exact_posterior(x, x @ a, beta, modes, 2, 50_000, torch.Generator().manual_seed(1))
    log_z = beta**2 * s * (a @ a).item() / 2
    assert exact.log_z == pytest.approx(log_z, abs=0.02)  # MC standard error ~0.003
    mean = beta * s * a
    torch.testing.assert_close(exact.samples.mean(0), mean, atol=0.03, rtol=0)
    p_right = 0.5 * math.erfc(-mean[0].item() / math.sqrt(2 * s))  # P(x_0 > 0) under N(beta s a, s I)
    assert exact.mode_masses[1].item() == pytest.approx(p_right, abs=0.01)
    assert exact.prior_mode_masses[1].item() == pytest.approx(0.5, abs=0.01)


# ---------------------------------------------------------------- the objectives
def _tilted_brownian_pair(sigma2: float, a: torch.Tensor, beta: float) -> tuple[DriftPolicy, DriftPolicy, float]:
    """(prior, posterior, log Z): the zero-drift Euler-Maruyama chain p and its exact tilt by r(x) = exp(a.x)^beta.
    Per step, N(e; 0, v) exp(beta a.e) = N(e; v beta a, v) exp(v beta^2 |a|^2 / 2), v = sigma^2 dt, so the posterior
    is the constant drift f = sigma^2 beta a and log Z = sigma^2 beta^2 |a|^2 / 2, for any T."""
    prior = DriftPolicy(2, hidden_dim=16, time_embedding_dim=8)  # zero-initialized output: zero drift
    posterior = copy.deepcopy(prior)
    with torch.no_grad():
        posterior.nn1.out.bias.copy_(sigma2 * beta * a)
    return prior, posterior, sigma2 * beta**2 * (a @ a).item() / 2


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_rtb_loss_is_zero_for_the_exact_posterior_pair(beta):
    sigma2, T, a = 5.0, 10, torch.tensor([0.3, -0.2])
    prior, posterior, log_z = _tilted_brownian_pair(sigma2, a, beta)
    g = torch.Generator().manual_seed(0)
    on_policy = sample_forward(posterior, 256, T, sigma2, 0.0, 2, g)
    explored = sample_forward(prior, 256, T, sigma2, 0.7, 2, g)  # any trajectory distribution: RTB is off-policy
    bridged = sample_backward(posterior, 4 * torch.randn(256, 2, generator=g), T, sigma2, g)
    for traj in (on_policy, explored, bridged):
        log_p_post, log_p_prior = (
            forward_log_prob(posterior, traj.states, sigma2),
            forward_log_prob(prior, traj.states, sigma2),
        )
        log_r = traj.terminal @ a
        args = (log_p_post, log_p_prior, log_r)
        assert relative_tb_loss(*args, torch.tensor(log_z), beta).item() < 1e-8
        assert relative_tb_loss(*args, torch.tensor(log_z + 0.3), beta).item() == pytest.approx(0.09, abs=1e-4)
        assert relative_tb_loss(*args, torch.tensor(log_z), 1.3 * beta).item() > 1e-2  # the wrong posterior
    # posterior == prior and r == const: log Z = beta log const
    traj = on_policy
    log_p = forward_log_prob(prior, traj.states, sigma2)
    const = torch.full((256,), 1.7)
    assert relative_tb_loss(log_p, log_p, const, torch.tensor(beta * 1.7), beta).item() < 1e-10


def test_relative_vargrad_and_clipping():
    """Relative VarGrad (the learner's loss 'vargrad': RTB at the detached batch mean of log p + beta log r -
    log p_post) has VarGrad's value and gradient; clipping at c = 0 is RTB and drops balanced trajectories."""
    g = torch.Generator().manual_seed(0)
    log_p_post = torch.randn(64, generator=g).requires_grad_(True)
    log_p_prior, log_r, beta = torch.randn(64, generator=g), torch.randn(64, generator=g), 0.7
    log_z_hat = (log_p_prior + beta * log_r - log_p_post).mean().detach()
    ours = relative_tb_loss(log_p_post, log_p_prior, log_r, log_z_hat, beta)
    (grad_ours,) = torch.autograd.grad(ours, log_p_post)
    reference = vargrad_loss(log_p_post, log_p_prior, beta * log_r)
    (grad_reference,) = torch.autograd.grad(reference, log_p_post)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grad_ours, grad_reference)

    log_z = torch.tensor(0.4)
    unclipped = relative_tb_loss(log_p_post, log_p_prior, log_r, log_z, beta)
    torch.testing.assert_close(clipped_relative_tb_loss(log_p_post, log_p_prior, log_r, log_z, beta, 0.0), unclipped)
    delta = (log_z + log_p_post - log_p_prior - beta * log_r).detach()
    clipped = clipped_relative_tb_loss(log_p_post, log_p_prior, log_r, log_z, beta, 1.0)
    (grad,) = torch.autograd.grad(clipped, log_p_post)
    assert (grad[delta.abs() < 1] == 0).all() and (grad[delta.abs() > 1] != 0).all()
    assert clipped.item() == pytest.approx(torch.relu(delta**2 - 1).mean().item(), rel=1e-6)


def test_subset_gradient_keeps_the_value_and_is_unbiased():
    sigma2, T = 5.0, 4
    policy = DriftPolicy(2, hidden_dim=16, time_embedding_dim=8)
    with torch.no_grad():
        policy.nn1.out.weight.normal_(0, 0.5)  # a non-zero drift, so every step has its own gradient
    g = torch.Generator().manual_seed(0)
    traj = sample_forward(policy, 64, T, sigma2, 0.3, 2, g)
    bias = policy.nn1.out.bias
    (full,) = torch.autograd.grad(traj.log_pf.sum(), bias)
    grads = []
    for _ in range(600):
        log_pf = subset_gradient_log_pf(policy, traj.states, traj.log_pf_steps.detach(), sigma2, 0.5, g)
        torch.testing.assert_close(log_pf, traj.log_pf.detach())
        grads.append(torch.autograd.grad(log_pf.sum(), bias)[0])
    torch.testing.assert_close(torch.stack(grads).mean(0), full, rtol=0.05, atol=0.05 * full.abs().max().item())
    single = subset_gradient_log_pf(policy, traj.states, traj.log_pf_steps.detach(), sigma2, 1.0, g)
    torch.testing.assert_close(torch.autograd.grad(single.sum(), bias)[0], full)


def test_rl_advantages():
    """Centred advantages sum to zero; rl_kl's is zero at its optimum q = p r^(1/alpha) / Z (no gradient there)."""
    g = torch.Generator().manual_seed(0)
    log_r, log_p, alpha = torch.randn(32, generator=g), torch.randn(32, generator=g), 0.5
    log_q = log_p + log_r / alpha - 0.8  # the optimum, log Z = 0.8
    assert kl_regularized_advantage(log_r, log_q, log_p, alpha).abs().max() < 1e-5
    off = kl_regularized_advantage(log_r, log_q + torch.randn(32, generator=g), log_p, alpha)
    assert off.sum().abs() < 1e-5 and off.abs().max() > 0.1
    assert reward_advantage(log_r, "reward").sum().abs() < 1e-5
    torch.testing.assert_close(reward_advantage(log_r, "log_reward"), log_r - log_r.mean())
    log_q_param = torch.zeros(32, requires_grad=True)
    (grad,) = torch.autograd.grad(reinforce_loss(log_q_param, off), log_q_param)
    torch.testing.assert_close(grad, -off / 32)


def test_mode_masses_and_total_variation_on_known_mixtures():
    task = Toy2D()
    x = task.sample_target(40_000, seed=3)
    masses = mode_masses(task.mode_of(x), 25)
    assert total_variation(masses, task.target_mode_masses) < 0.015  # sampling noise ~0.006
    uniform = torch.full((25,), 1 / 25)
    w9 = np.asarray(NINE_MODE_WEIGHTS) / 61
    expected = 0.5 * (np.abs(w9 - 1 / 25).sum() + 16 / 25)
    assert total_variation(uniform, task.target_mode_masses) == pytest.approx(expected, abs=1e-6)
    assert total_variation(masses, masses) == 0.0
    assert total_variation(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == 1.0
    prior_masses = mode_masses(task.mode_of(task.sample_prior(40_000, seed=4)), 25)
    assert total_variation(prior_masses, uniform) < 0.03


# ---------------------------------------------------------------- the learner
def test_prior_fit_is_deterministic_and_near_the_data(small_prior):
    again = RTBLearner(RTBConfig(**SMALL), seed=5).prior_state_dict()  # another trial seed, the same prior
    for name, tensor in small_prior["policy"].items():
        torch.testing.assert_close(again["policy"][name], tensor, rtol=0, atol=0)
    assert small_prior["key"] == RTBConfig(**SMALL).prior_key()
    # the NLL bound is >= H(GMM25) = 4.85 in expectation; the short fit is within 2 nats of it
    assert GMM25_ENTROPY - 0.1 < small_prior["fit"]["nll_bound"] < GMM25_ENTROPY + 2.0
    with pytest.raises(ValueError, match="prior fitted for"):
        RTBLearner(RTBConfig(**SMALL | {"prior_seed": 1}), seed=0, prior_state=small_prior)


def test_short_rtb_run_improves_on_the_prior(small_prior):
    """Recorded (prior seeds 0 and 1, posterior seeds 0 and 1): 800 iterations at beta = 2 (log Z_MC ~1.25-1.39,
    log Z starts at 0) move TV to the fitted prior's exact posterior from ~0.67 to ~0.20-0.24 and the learned log Z
    error from ~1.25-1.39 to ~0.6-0.7 (the learned log Z tracks the ELBO: what remains is KL(q || posterior))."""
    config = RTBConfig(**SMALL, beta=2.0, total_iters=800)
    learner = RTBLearner(config, seed=0, prior_state=small_prior)
    before = learner.evaluate().metrics
    metrics, terminals = learner.train(800)
    after = learner.evaluate().metrics
    assert learner.step == 800 and terminals.x.shape == (800 * 128, 2)
    np.testing.assert_allclose(
        terminals.log_reward, learner.task.log_r(torch.as_tensor(terminals.x)).numpy(), atol=1e-4
    )
    assert set(metrics) == {
        "train/loss",
        "train/grad_norm",
        "train/mean_log_r",
        "train/log_ratio",
        "train/exploration_std",
        "train/log_z",
        "train/replay_fraction",
    }
    assert all(math.isfinite(v) for v in metrics.values())
    assert before["eval/tv_to_prior_posterior"] > 0.4
    assert after["eval/tv_to_prior_posterior"] < before["eval/tv_to_prior_posterior"] - 0.3, (before, after)
    assert after["eval/log_z_error"] < before["eval/log_z_error"] - 0.35, (before, after)
    assert after["eval/removed_mode_mass"] < before["eval/removed_mode_mass"] - 0.3


def _flat(learner: RTBLearner) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in learner.posterior.parameters()] + [learner.log_z.detach()[None]])


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"loss": "vargrad", "grad_steps_fraction": 0.3, "loss_clip": 0.1},
        {"method": "rl_kl"},
        {"log_variance_range": 1.0, "grad_steps_fraction": 0.3},
    ],
)
def test_state_dict_round_trip_continues_identically(small_prior, overrides):
    config = RTBConfig(**SMALL | {"batch_size": 32, "total_iters": 20} | overrides)
    replay = torch.randn(50, 2) * 5
    a = RTBLearner(config, seed=3, prior_state=small_prior)
    a.train(3, replay)
    state = a.state_dict()
    metrics_a, terminals_a = a.train(4, replay)
    b = RTBLearner.from_state_dict(state)  # no prior_state: the checkpoint holds the prior
    assert b.step == 3 and b.prior_fit == a.prior_fit
    metrics_b, terminals_b = b.train(4, replay)
    assert metrics_a == metrics_b
    np.testing.assert_array_equal(terminals_a.x, terminals_b.x)
    torch.testing.assert_close(_flat(a), _flat(b), rtol=0, atol=0)
    if config.method == "rtb":
        assert metrics_a["train/replay_fraction"] == 0.5  # odd steps 3, 5 of 3..6 trained on the replay states


def test_a_learned_variance_starts_at_the_prior_and_trains(small_prior):
    fixed = RTBLearner(RTBConfig(**SMALL), seed=0, prior_state=small_prior)
    learned = RTBLearner(RTBConfig(**SMALL, log_variance_range=1.0), seed=0, prior_state=small_prior)
    assert fixed.evaluate(500).metrics == pytest.approx(learned.evaluate(500).metrics, abs=1e-4)
    head = [p.detach().clone() for p in learned.posterior.nn_var.parameters()]
    metrics, _ = learned.train(5)
    assert all(math.isfinite(v) for v in metrics.values())
    assert not all(torch.equal(a, b) for a, b in zip(head, learned.posterior.nn_var.parameters()))
    scale = learned.posterior.log_variance_scale(
        torch.randn(64, 2) * 5, learned.posterior.time_embedding(torch.rand(64))
    )
    assert scale.abs().max() > 0 and scale.abs().max() <= 1.0


def test_classifier_guidance_and_rl_run(small_prior):
    """CG is training-free and moves mass off the removed modes; rl and rl_kl train and change the sampler."""
    cg = RTBLearner(RTBConfig(**SMALL, method="classifier_guidance"), seed=0, prior_state=small_prior)
    weights = _flat(cg)
    metrics, terminals = cg.train(10)
    assert cg.step == 10 and metrics == {} and terminals.x.shape == (0, 2)
    torch.testing.assert_close(_flat(cg), weights, rtol=0, atol=0)
    m = cg.evaluate(2_000).metrics
    assert m["eval/removed_mode_mass"] < 0.5 * (16 / 25), m  # the prior's is ~0.64
    assert "eval/log_z" not in m and math.isfinite(m["eval/log_z_iw"])
    ev = cg.evaluate(500)
    assert ev.samples.shape == (500, 2) and set(ev.figures) == {"samples", "mode_masses"}
    assert b"exact posterior" in ev.files["mode_masses.json"]
    for method in ("rl", "rl_kl"):
        learner = RTBLearner(RTBConfig(**SMALL | {"method": method, "batch_size": 64}), seed=0, prior_state=small_prior)
        metrics, _ = learner.train(5)
        assert all(math.isfinite(v) for v in metrics.values()) and metrics["train/exploration_std"] == 0.0
        assert not torch.equal(_flat(learner), weights)


@pytest.fixture(scope="module")
def smoke_prior() -> dict:
    return RTBLearner(RTBConfig().smoke(), seed=0).prior_state_dict()


def test_dps_runs_training_free(smoke_prior):
    """DPS, like CG, trains nothing and learns no log Z; its samples evaluate finite."""
    dps = RTBLearner(RTBConfig(method="dps").smoke(), seed=0, prior_state=smoke_prior)
    weights = _flat(dps)
    metrics, terminals = dps.train(3)
    assert dps.step == 3 and metrics == {} and terminals.x.shape == (0, 2)
    torch.testing.assert_close(_flat(dps), weights, rtol=0, atol=0)
    m = dps.evaluate().metrics
    assert "eval/log_z" not in m and all(math.isfinite(v) for v in m.values()), m


@pytest.mark.parametrize("method", ["classifier_guidance", "dps"])
def test_guidance_at_scale_zero_samples_the_prior(smoke_prior, method):
    """lambda = 0: the guided sampler's trajectories and log q are the prior's, bit for bit."""
    config = RTBConfig(method=method, guidance_scale=0.0).smoke()
    learner = RTBLearner(config, seed=0, prior_state=smoke_prior)
    x, log_q, log_p = learner.sample(300, torch.Generator().manual_seed(4))
    prior = sample_forward(
        learner.prior, 300, config.num_steps, config.sigma2, 0.0, 2, torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(x, prior.terminal, rtol=0, atol=0)
    torch.testing.assert_close(log_q, prior.log_pf, rtol=0, atol=0)
    torch.testing.assert_close(log_p, prior.log_pf, rtol=0, atol=0)


def test_dps_drift_evaluates_r_at_the_one_step_estimate_of_x1():
    """For a hand-set drift f, DPS's drift is f + lambda_i J^T grad log r(x1_hat), x1_hat = x + (1 - t) f(x, t) and
    J = d x1_hat / dx by torch.autograd.functional.jacobian, per state; at both the rollout's scalar t and the log-prob
    pass's [n] times. CG's drift (r at x) differs from it by far more than the tolerance."""
    torch.manual_seed(0)
    task, T, scale, sigma2 = Toy2D(), 10, 0.7, 5.0
    prior = DriftPolicy(2, hidden_dim=16, time_embedding_dim=8).requires_grad_(False)
    with torch.no_grad():
        prior.nn1.out.weight.normal_(0, 1.0)  # a non-zero drift with a non-trivial Jacobian
    dps = GuidedPolicy(prior, dps_guidance(prior, task.grad_log_r), scale, sigma2, T)
    cg = GuidedPolicy(prior, classifier_guidance(task.grad_log_r), scale, sigma2, T)
    x = task.means[:6] + torch.randn(6, 2)  # [B, 2], near modes
    t = torch.tensor([1, 4, 7]) / T  # [n]

    def expected(x_b: torch.Tensor, t_k: torch.Tensor) -> torch.Tensor:
        x1_hat = lambda y: y + (1 - t_k) * prior(y, t_k)
        J = torch.autograd.functional.jacobian(x1_hat, x_b)  # [2, 2], J[a, b] = d x1_hat_a / d x_b
        i = round(t_k.item() * T)
        return prior(x_b, t_k) + scale * sigma2 * i / (i + 1) * J.T @ task.grad_log_r(x1_hat(x_b))

    want = torch.stack([torch.stack([expected(x_b, t_k) for t_k in t]) for x_b in x])  # [B, n, 2]
    with torch.no_grad():
        got = dps.drift(x[:, None].expand(-1, 3, -1), dps.time_embedding(t))  # [B, n, 2], as in forward_log_prob
        got_rollout = torch.stack([dps.drift(x, dps.time_embedding(t_k)) for t_k in t], dim=1)  # as in a rollout
        got_cg = cg.drift(x[:, None].expand(-1, 3, -1), cg.time_embedding(t))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_rollout, want, rtol=1e-4, atol=1e-4)
    assert (got_cg - want).abs().max() > 1.0


def test_smoke_config_runs():
    learner = RTBLearner(RTBConfig().smoke(), seed=0)
    learner.train(3)
    assert math.isfinite(learner.evaluate().metrics["eval/tv_to_prior_posterior"])


# ---------------------------------------------------------------- the paper-level check (study: make test-study)
CONVERGENCE = {
    "hidden_dim": 128,
    "prior_iters": 5_000,
    "total_iters": 4_000,
    "lr": 3e-3,
    "grad_clip": 10.0,
    "lr_schedule": "cosine",
}
"""The reference toy (T = 100, sigma^2 = 5, batch 500, log Z lr 0.1, its exploration schedule) with a 128-wide drift,
gradient clipping and a cosine learning rate: the settings measured to meet the checks below (docs: the report)."""


@pytest.mark.study
def test_rtb_converges_to_the_exact_posterior_of_its_prior():
    """RTB's mode masses within TV 0.05 of the fitted prior's exact posterior, where classifier guidance, on the same
    prior, is visibly further off; its importance-weighted log Z within 0.05 of the Monte Carlo log E_prior[r].

    The learned log Z: measured 0.063 from log Z_MC with this fixed variance (seed 0, docs/rtb.md), the KL left
    between the sampler and the posterior; the learned variance of the sweep (log_variance_range 1) reaches 0.033 /
    0.035 (seeds 0 / 1) but costs ~70 % more time per iteration, so this test, ~20 min on one thread, keeps the
    fixed variance and holds the learned log Z to 0.1."""
    rtb = RTBLearner(RTBConfig(**CONVERGENCE), seed=0)
    rtb.train(CONVERGENCE["total_iters"])
    m = rtb.evaluate().metrics
    cg = RTBLearner(RTBConfig(**CONVERGENCE, method="classifier_guidance"), seed=0, prior_state=rtb.prior_state_dict())
    m_cg = cg.evaluate().metrics
    assert m["eval/tv_to_prior_posterior"] <= 0.05, m
    assert m_cg["eval/tv_to_prior_posterior"] > m["eval/tv_to_prior_posterior"] + 0.1, (m, m_cg)
    assert m["eval/log_z_iw_error"] <= 0.05, m
    assert m["eval/log_z_error"] <= 0.1, m
