"""Forward / Brownian-bridge trajectories: per-step and summed log PF, log PB against direct Normal
log-probs, exact consistency (log w = log Z) of the zero-drift SDE on its own terminal marginal, the
reference marginal, the reparameterized (PIS) rollout, and the optimized rollout and chunked log PF pass
against their plain forms."""

import math

import torch
from torch.distributions import Normal

from workloads.samplers.metrics import log_importance_weights
from workloads.samplers.policy import DriftPolicy
from workloads.samplers.sde import (
    forward_log_prob_steps,
    reference_log_marginal,
    sample_backward,
    sample_forward,
    sample_forward_reparameterized,
    time_grid,
)
from workloads.samplers.targets.base import Target

SIGMA2 = 5.0


class ScaledGaussian(Target):
    """R(x) = Z N(x; 0, s2 I): the terminal marginal of the zero-drift SDE, times Z."""

    dim = 2

    def __init__(self, s2: float, log_z: float):
        super().__init__()
        self.register_buffer("s2", torch.tensor(s2))
        self.log_z = log_z

    def log_reward(self, x):
        return self.log_z + Normal(0.0, self.s2.sqrt()).log_prob(x).sum(-1)

    def sample(self, n, seed):
        return torch.randn(n, self.dim, generator=torch.Generator().manual_seed(seed)) * self.s2.sqrt()


def _random_policy(seed=0, log_variance_range=0.0):
    torch.manual_seed(seed)
    policy = DriftPolicy(2, hidden_dim=16, time_embedding_dim=8, log_variance_range=log_variance_range)
    torch.nn.init.normal_(policy.nn1.out.weight, std=0.5)  # non-zero drift
    if policy.nn_var is not None:
        torch.nn.init.normal_(policy.nn_var.out.weight, std=0.5)  # a state-dependent variance
        torch.nn.init.normal_(policy.nn_var.out.bias, std=0.5)
    return policy


def _direct_log_pf_steps(policy, states, sigma2):
    """[B, T], one Normal per step."""
    T = states.shape[1] - 1
    dt = 1.0 / T
    steps = []
    for i in range(T):
        x, t = states[:, i], torch.tensor(i / T)
        f = policy(x, t)
        var = torch.tensor(sigma2 * dt)
        if policy.nn_var is not None:  # var exp(c tanh(NN_var(x, t)))
            var = var * torch.exp(policy.log_variance_range * torch.tanh(policy.nn_var(x, policy.time_embedding(t))))
        steps.append(Normal(x + f * dt, var.sqrt()).log_prob(states[:, i + 1]).sum(-1))
    return torch.stack(steps, 1)


def _direct_log_pb_steps(states, sigma2):
    """[B, T], one Normal per step; step 0 (to x_0 = 0) is deterministic: 0."""
    T = states.shape[1] - 1
    dt = 1.0 / T
    steps = [torch.zeros(states.shape[0])]
    for i in range(1, T):
        r = (i / T) / ((i + 1) / T)
        steps.append(Normal(states[:, i + 1] * r, math.sqrt(sigma2 * dt * r)).log_prob(states[:, i]).sum(-1))
    return torch.stack(steps, 1)


def _direct_log_pf(policy, states, sigma2):
    return _direct_log_pf_steps(policy, states, sigma2).sum(-1)


def _direct_log_pb(states, sigma2):
    return _direct_log_pb_steps(states, sigma2).sum(-1)


def test_backward_log_pb_and_log_pf_match_direct_normal():
    policy = _random_policy()
    x_T = torch.randn(16, 2) * 3
    traj = sample_backward(policy, x_T, T=12, sigma2=SIGMA2, generator=torch.Generator().manual_seed(0))
    assert traj.states.shape == (16, 13, 2)
    assert torch.equal(traj.states[:, -1], x_T) and torch.all(traj.states[:, 0] == 0)
    assert torch.allclose(traj.log_pb, _direct_log_pb(traj.states, SIGMA2), rtol=1e-5, atol=1e-3)
    assert torch.allclose(traj.log_pf, _direct_log_pf(policy, traj.states, SIGMA2), rtol=1e-5, atol=1e-3)
    assert traj.log_pf.requires_grad


def test_forward_log_pf_is_under_the_unmodified_policy():
    policy = _random_policy(1)
    for expl in (0.0, 0.5):
        traj = sample_forward(policy, 16, T=10, sigma2=SIGMA2, exploration_std=expl, dim=2)
        assert torch.all(traj.states[:, 0] == 0)
        assert torch.allclose(traj.log_pf, _direct_log_pf(policy, traj.states, SIGMA2), rtol=1e-5, atol=1e-3)
        assert torch.allclose(traj.log_pb, _direct_log_pb(traj.states, SIGMA2), rtol=1e-5, atol=1e-3)


def test_exploration_widens_the_sampling_std():
    policy = DriftPolicy(2)  # zero drift: increments are pure noise
    T, B = 10, 4000
    for expl in (0.0, 0.3):
        traj = sample_forward(policy, B, T, SIGMA2, expl, dim=2, generator=torch.Generator().manual_seed(0))
        inc = traj.states.diff(dim=1)
        assert abs(inc.std().item() - math.sqrt(SIGMA2 / T + expl**2)) < 0.02


def test_a_learned_variance_scores_and_samples_with_its_own_variance():
    policy = _random_policy(4, log_variance_range=1.0)
    for traj in (
        sample_forward(policy, 16, T=8, sigma2=SIGMA2, exploration_std=0.3, dim=2),
        sample_backward(policy, torch.randn(16, 2) * 3, T=8, sigma2=SIGMA2),
    ):
        assert torch.allclose(traj.log_pf_steps, _direct_log_pf_steps(policy, traj.states, SIGMA2), atol=1e-4)
        with_fixed_variance = _direct_log_pf_steps(_random_policy(4), traj.states, SIGMA2)  # the same drift
        assert (traj.log_pf_steps - with_fixed_variance).abs().max() > 0.1
    # zero drift, s = log 2 everywhere: increments have variance 2 sigma^2 dt (+ exploration's)
    constant = DriftPolicy(2, log_variance_range=1.0)
    torch.nn.init.constant_(constant.nn_var.out.bias, math.atanh(math.log(2.0)))
    T, B = 10, 4000
    for expl in (0.0, 0.3):
        traj = sample_forward(constant, B, T, SIGMA2, expl, dim=2, generator=torch.Generator().manual_seed(0))
        assert abs(traj.states.diff(dim=1).var().item() - (2 * SIGMA2 / T + expl**2)) < 0.02
    # at init (zero-initialized head) it is the fixed-variance policy
    fresh = DriftPolicy(2, hidden_dim=16, time_embedding_dim=8, log_variance_range=1.0)
    fixed = DriftPolicy(2, hidden_dim=16, time_embedding_dim=8)
    fixed.load_state_dict(fresh.state_dict(), strict=False)
    traj = sample_forward(fresh, 8, T=6, sigma2=SIGMA2, exploration_std=0.0, dim=2)
    assert torch.allclose(traj.log_pf_steps, forward_log_prob_steps(fixed, traj.states, SIGMA2))


def test_zero_drift_sde_has_exact_importance_weights_on_its_terminal_marginal():
    """PF(tau) with f = 0 is Brownian motion; PB is its exact time reversal given x_1 ~ N(0, sigma^2 I),
    so log R + log PB - log PF = log Z on every trajectory (fails for a wrong PB mean / variance / step count)."""
    policy = DriftPolicy(2)  # zero-initialized output layer: f = 0
    target = ScaledGaussian(SIGMA2, log_z=1.7)
    for T in (1, 2, 25):
        traj = sample_forward(policy, 64, T, SIGMA2, 0.0, dim=2)
        log_w = log_importance_weights(target.log_reward(traj.terminal), traj.log_pf, traj.log_pb)
        assert torch.allclose(log_w, torch.full_like(log_w, 1.7), atol=1e-3), (T, log_w[:4])
        back = sample_backward(policy, target.sample(64, seed=T), T, SIGMA2)
        log_w = log_importance_weights(target.log_reward(back.terminal), back.log_pf, back.log_pb)
        assert torch.allclose(log_w, torch.full_like(log_w, 1.7), atol=1e-3)
    # the same check on the wrong Gaussian is off by a data-dependent amount
    wrong = ScaledGaussian(2.0 * SIGMA2, log_z=1.7)
    log_w = log_importance_weights(wrong.log_reward(traj.terminal), traj.log_pf, traj.log_pb)
    assert log_w.std() > 0.1


def test_per_step_terms_match_direct_normals_and_sum_to_the_totals():
    policy = _random_policy(2)
    traj = sample_forward(policy, 16, T=8, sigma2=SIGMA2, exploration_std=0.3, dim=2)
    assert traj.log_pf_steps.shape == traj.log_pb_steps.shape == (16, 8)
    assert torch.allclose(traj.log_pf_steps, _direct_log_pf_steps(policy, traj.states, SIGMA2), atol=1e-4)
    assert torch.allclose(traj.log_pb_steps, _direct_log_pb_steps(traj.states, SIGMA2), atol=1e-4)
    assert torch.all(traj.log_pb_steps[:, 0] == 0)
    assert torch.allclose(traj.log_pf, traj.log_pf_steps.sum(-1))
    assert torch.allclose(traj.log_pb, traj.log_pb_steps.sum(-1))


def test_reference_log_marginal_is_the_zero_drift_marginal():
    """log N(x; 0, sigma^2 t I) at each t_i; the zero-drift states at t_i have that variance."""
    x, t = torch.randn(5, 3, 2), time_grid(4)[1:-1]  # [5, 3, 2], [3]
    expected = Normal(0.0, (SIGMA2 * t).sqrt()[:, None]).log_prob(x).sum(-1)  # [5, 3]
    assert torch.allclose(reference_log_marginal(x, t, SIGMA2), expected, atol=1e-5)
    traj = sample_forward(DriftPolicy(2), 4000, 4, SIGMA2, 0.0, dim=2, generator=torch.Generator().manual_seed(0))
    var = traj.states[:, 1:].var(dim=(0, 2))  # [4]
    assert torch.allclose(var, SIGMA2 * time_grid(4)[1:], rtol=0.05)


def test_reparameterized_rollout_matches_and_keeps_the_gradient():
    policy = _random_policy(3)
    g = lambda: torch.Generator().manual_seed(4)
    reparam = sample_forward_reparameterized(policy, 8, 6, SIGMA2, dim=2, generator=g())
    plain = sample_forward(policy, 8, 6, SIGMA2, 0.0, dim=2, generator=g())
    assert torch.allclose(reparam.states, plain.states, atol=1e-6) and reparam.states.requires_grad
    (grad,) = torch.autograd.grad(reparam.terminal.sum(), policy.nn1.out.bias)
    assert grad.abs().min() > 0
    constant = DriftPolicy(2)  # zero output weight: f = b, so x_1 = b + noise and d x_1 / d b = T dt = 1
    terminal = sample_forward_reparameterized(constant, 8, 6, SIGMA2, dim=2, generator=g()).terminal
    (grad,) = torch.autograd.grad(terminal.sum(), constant.nn1.out.bias)
    assert torch.allclose(grad, torch.full((2,), 8.0))  # summed over the 8 samples


def _plain_rollout(policy, eps, std):
    """The forward rollout written plainly: the network through its modules, the noise scaled at each step."""
    T = eps.shape[0]
    dt = 1.0 / T
    t_emb = policy.time_embedding(time_grid(T)[:-1])  # [T, H]
    mlp = policy.nn1
    x = torch.zeros_like(eps[0])
    states = [x]
    for i in range(T):
        f = mlp.out(mlp.trunk(mlp.state_embed(x) + t_emb[i]))
        if policy.langevin:
            f = f + policy.nn2(t_emb[i]) * policy.clipped_grad_log_reward(x)
        x = x + f * dt + std * eps[i]
        states.append(x)
    return torch.stack(states, dim=1)  # [B, T+1, D]


def test_rollout_gives_the_states_of_the_plain_loop_bit_for_bit():
    """The optimized rollout (weights looked up once, noise scaled once) draws the same noise and computes
    the same states as the plain loop, exactly; with and without the Langevin drift."""
    T, B, expl = 12, 32, 0.3
    std = math.sqrt(SIGMA2 / T + expl**2)
    for grad_log_reward in (None, lambda x: -x / SIGMA2):
        torch.manual_seed(5)
        policy = DriftPolicy(2, hidden_dim=16, time_embedding_dim=8, grad_log_reward=grad_log_reward)
        torch.nn.init.normal_(policy.nn1.out.weight, std=0.5)
        if policy.langevin:
            torch.nn.init.normal_(policy.nn2[-1].weight, std=0.5)
        traj = sample_forward(policy, B, T, SIGMA2, expl, dim=2, generator=torch.Generator().manual_seed(6))
        eps = torch.randn(T, B, 2, generator=torch.Generator().manual_seed(6))
        with torch.no_grad():
            assert torch.equal(traj.states, _plain_rollout(policy, eps, std))


def test_log_pf_is_the_same_for_any_chunking_with_the_same_gradient():
    policy = _random_policy(7)
    traj = sample_forward(policy, 24, T=10, sigma2=SIGMA2, exploration_std=0.2, dim=2)
    results = []
    for chunk in (1, 24, 50, 24 * 10, 10**6):  # per step, one step, uneven chunks, one call
        log_pf = forward_log_prob_steps(policy, traj.states, SIGMA2, chunk_transitions=chunk)  # [B, T]
        grads = torch.autograd.grad(log_pf.pow(2).sum(), list(policy.parameters()))
        results.append((log_pf.detach(), grads))
    for log_pf, grads in results[1:]:
        assert torch.allclose(log_pf, results[0][0], rtol=1e-6, atol=1e-5)
        assert all(torch.allclose(g, g0, rtol=1e-5, atol=1e-6) for g, g0 in zip(grads, results[0][1]))
