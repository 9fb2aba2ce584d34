"""SubTB, FL-SubTB, PIS and the Langevin parameterization.

The analytic case: target R = Z N(0, sigma^2 I) (log Z = 0, and 1.3 to check where log Z enters) is Z
times the terminal marginal of the zero-drift SDE, so the zero drift is optimal, its exact flows are
log F(x, t) = log Z + log N(x; 0, sigma^2 t I) with log F(x_0) = log Z, and every (sub)trajectory
balance residual vanishes."""

import math
from functools import partial

import torch
from torch.distributions import Normal

from workloads.objectives import (
    boundary_log_flows,
    fl_subtb_loss,
    forward_looking_log_flows,
    pis_loss,
    subtb_loss,
    subtb_residuals,
)
from workloads.samplers.config import SamplerConfig
from workloads.samplers.learner import SamplerLearner
from workloads.samplers.losses import intermediate_log_reward
from workloads.samplers.policy import LANGEVIN_GRAD_CLIP, DriftPolicy
from workloads.samplers.sde import (
    reference_log_marginal,
    sample_backward,
    sample_forward,
    sample_forward_reparameterized,
    time_grid,
)
from workloads.samplers.targets.base import Target

SIGMA2 = 5.0
T = 10


LOG_ZS = (0.0, 1.3)


class Gaussian(Target):
    """R(x) = Z N(x; 0, s2 I)."""

    dim = 2

    def __init__(self, s2: float, log_z: float = 0.0):
        super().__init__()
        self.s2, self.log_z = s2, log_z

    def log_reward(self, x):
        return self.log_z + Normal(0.0, math.sqrt(self.s2)).log_prob(x).sum(-1)

    def sample(self, n, seed):
        return torch.randn(n, self.dim, generator=torch.Generator().manual_seed(seed)) * math.sqrt(self.s2)


class ExactFlow(torch.nn.Module):
    """log F(x, t) = log Z + log N(x; 0, sigma^2 t I), the exact flow of the zero-drift SDE towards
    R = Z N(0, sigma^2 I) (plus an optional error)."""

    def __init__(self, log_z: float, error: float = 0.0):
        super().__init__()
        self.log_z, self.error = log_z, error

    def forward(self, x, t):
        return self.log_z + reference_log_marginal(x, t, SIGMA2) + self.error * x[..., 0]


class ExactFlowCorrection(ExactFlow):
    """log F~(x, t) = log F(x, t) - (1 - t) log p_ref(x, t) - t log R(x), the exact FL-SubTB correction."""

    def forward(self, x, t):
        log_p_ref = reference_log_marginal(x, t, SIGMA2)
        return super().forward(x, t) - (1 - t) * log_p_ref - t * Gaussian(SIGMA2, self.log_z).log_reward(x)


def _random_policy(seed=0, dim=2, grad_log_reward=None):
    torch.manual_seed(seed)
    policy = DriftPolicy(dim, hidden_dim=16, time_embedding_dim=8, grad_log_reward=grad_log_reward)
    torch.nn.init.normal_(policy.nn1.out.weight, std=0.5)  # non-zero drift
    return policy


# ---------------------------------------------------------------- SubTB
# (the objectives' own properties, the double loop and the weights: test_objectives.py)
def _analytic_forward_and_backward(log_z: float):
    policy = DriftPolicy(2, hidden_dim=16, time_embedding_dim=8)  # zero-initialized output: f = 0
    target = Gaussian(SIGMA2, log_z)
    g = torch.Generator().manual_seed(0)
    forward = sample_forward(policy, 32, T, SIGMA2, 0.0, dim=2, generator=g)
    backward = sample_backward(policy, target.sample(32, seed=1), T, SIGMA2, generator=g)
    return target, (forward, backward)


def _exact_log_flows(traj, target, flow):
    t = time_grid(T)[1:-1]  # [T-1]
    x = traj.states[:, 1:-1]  # [B, T-1, D]
    return boundary_log_flows(flow(x, t), torch.tensor(target.log_z), target.log_reward(traj.terminal))


def test_subtb_residuals_vanish_at_the_exact_flows_and_not_otherwise():
    upper = torch.ones(T + 1, T + 1).triu(1).bool()
    for log_z in LOG_ZS:
        target, trajs = _analytic_forward_and_backward(log_z)
        for traj in trajs:
            exact = _exact_log_flows(traj, target, ExactFlow(log_z))
            resid = subtb_residuals(traj.log_pf_steps, traj.log_pb_steps, exact)
            assert resid[:, upper].abs().max() < 2e-3, resid[:, upper].abs().max()
            assert subtb_loss(traj.log_pf_steps, traj.log_pb_steps, exact, 2.0) < 1e-6
            perturbed = _exact_log_flows(traj, target, ExactFlow(log_z, error=0.3))
            assert subtb_residuals(traj.log_pf_steps, traj.log_pb_steps, perturbed)[:, upper].abs().max() > 0.1
            assert subtb_loss(traj.log_pf_steps, traj.log_pb_steps, perturbed, 2.0) > 1e-2


def test_fl_subtb_residuals_vanish_at_the_exact_correction_and_not_otherwise():
    t = time_grid(T)[1:-1]  # [T-1]
    upper = torch.ones(T + 1, T + 1).triu(1).bool()
    for log_z in LOG_ZS:
        target, trajs = _analytic_forward_and_backward(log_z)
        for traj in trajs:
            x = traj.states[:, 1:-1]  # [B, T-1, D]
            log_r_tilde = intermediate_log_reward(reference_log_marginal(x, t, SIGMA2), target.log_reward(x), t)
            for correction, zero in (
                (ExactFlowCorrection(log_z), True),
                (ExactFlowCorrection(log_z, 0.3), False),
                (lambda x, t: torch.zeros(x.shape[:-1]), False),
            ):
                args = (correction(x, t), log_r_tilde, torch.tensor(log_z), target.log_reward(traj.terminal))
                log_flows = forward_looking_log_flows(*args)  # [B, T+1]
                resid = subtb_residuals(traj.log_pf_steps, traj.log_pb_steps, log_flows)[:, upper].abs().max()
                assert (resid < 2e-3) if zero else (resid > 0.1), (log_z, zero, resid)
                loss = fl_subtb_loss(traj.log_pf_steps, traj.log_pb_steps, *args, 2.0)
                assert (loss < 1e-6) if zero else (loss > 1e-2), (log_z, zero, loss)


def test_learner_assembles_exact_flows_into_zero_loss():
    """The learner's own flow assembly (time grid, interior states, log Z, log R, forward-looking term)
    gives a zero loss when its flow network is replaced by the exact one (and the target by R = N(0, sigma^2 I))."""
    log_z = 1.3
    for loss, exact, wrong in (
        ("subtb", ExactFlow(log_z), ExactFlow(log_z, error=0.3)),
        ("fl_subtb", ExactFlowCorrection(log_z), ExactFlow(log_z)),
    ):
        learner = SamplerLearner(
            SamplerConfig(loss=loss, num_steps=T, sigma2=SIGMA2, hidden_dim=16, time_embedding_dim=8), seed=0
        )
        learner.target = Gaussian(SIGMA2, log_z)
        with torch.no_grad():
            learner.log_z.fill_(log_z)
        traj = sample_forward(learner.policy, 32, T, SIGMA2, 0.0, dim=2, generator=torch.Generator().manual_seed(0))
        log_r = learner.target.log_reward(traj.terminal)
        learner.flow = exact
        assert learner._loss(traj, log_r)[0] < 1e-6, loss
        learner.flow = wrong
        assert learner._loss(traj, log_r)[0] > 1e-2, loss


# ---------------------------------------------------------------- PIS
def test_pis_gradient_flows_through_the_states():
    policy = _random_policy(1)
    target = Gaussian(SIGMA2)
    param = policy.nn1.out.bias

    def pis(reparameterized: bool):
        sample = sample_forward_reparameterized if reparameterized else partial(sample_forward, exploration_std=0.0)
        traj = sample(policy, 16, 5, SIGMA2, dim=2, generator=torch.Generator().manual_seed(0))
        return pis_loss(traj.log_pf, traj.log_pb, target.log_reward(traj.terminal)), traj

    loss, traj = pis(reparameterized=True)
    loss_detached, traj_detached = pis(reparameterized=False)  # the same states, sampled without gradient
    assert traj.states.requires_grad and not traj_detached.states.requires_grad
    assert torch.allclose(traj.states, traj_detached.states, atol=1e-6)
    assert torch.allclose(loss, loss_detached, atol=1e-4)
    (grad,) = torch.autograd.grad(loss, param)
    (grad_detached,) = torch.autograd.grad(loss_detached, param)
    assert grad.abs().sum() > 1e-3
    assert (grad - grad_detached).abs().sum() > 0.1 * grad.abs().sum()
    # the pathwise gradient is the derivative of the loss at fixed noise: a central difference along it
    h = 1e-2
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            param += sign * h * grad
            values.append(pis(reparameterized=True)[0])
            param -= sign * h * grad
    fd = (values[0] - values[1]) / (2 * h)
    assert torch.allclose(fd, grad.pow(2).sum(), rtol=2e-2), (fd, grad.pow(2).sum())


def test_pis_loss_is_the_kl_minus_log_z():
    """E[log PF - log PB - log R] = KL(PF || PB R / Z) - log Z on R = N(0, sigma^2 I) (log Z = 0): 0 for the
    exact zero drift (even per trajectory); |c|^2 / (2 sigma^2) for a constant drift c, whose paths are
    the Brownian bridge to x_1 ~ N(c, sigma^2 I)."""
    target = Gaussian(SIGMA2)
    g = torch.Generator().manual_seed(0)
    policy = DriftPolicy(2, hidden_dim=16, time_embedding_dim=8)  # zero-initialized output: f = 0
    exact = sample_forward_reparameterized(policy, 256, T, SIGMA2, 2, g)
    per_traj = exact.log_pf - exact.log_pb - target.log_reward(exact.terminal)
    assert per_traj.abs().max() < 1e-3
    c = torch.tensor([2.0, -1.0])
    with torch.no_grad():
        policy.nn1.out.bias.copy_(c)  # f = c
    shifted = sample_forward_reparameterized(policy, 2000, T, SIGMA2, 2, g)
    loss = pis_loss(shifted.log_pf, shifted.log_pb, target.log_reward(shifted.terminal)).item()
    assert abs(loss - c.pow(2).sum().item() / (2 * SIGMA2)) < 0.1, loss  # 0.5 +- 0.022 (one std of the mean)


# ---------------------------------------------------------------- Langevin parameterization
def test_langevin_drift_is_nn1_plus_nn2_times_clipped_grad():
    def grad_log_reward(x):  # [B, D]; large enough to be clipped in places
        assert x.dim() == 2
        return 300.0 * torch.sin(x)

    policy = _random_policy(3, grad_log_reward=grad_log_reward)
    torch.nn.init.normal_(policy.nn2[-1].weight, std=0.5)  # a non-zero NN2(t)
    assert policy.langevin and not _random_policy(3).langevin
    x = torch.randn(6, 4, 2) * 2  # [B, T, D], as in the batched log PF pass
    t_emb = policy.time_embedding(torch.linspace(0, 1, 4))  # [T, H]
    grad = (300.0 * torch.sin(x)).clamp(-100, 100)
    expected = policy.nn1(x, t_emb) + policy.nn2(t_emb) * grad
    assert torch.allclose(policy.drift(x, t_emb), expected, atol=1e-6)
    assert (300.0 * torch.sin(x)).abs().max() > LANGEVIN_GRAD_CLIP  # clipping is exercised
    assert policy.clipped_grad_log_reward(x).abs().max() == LANGEVIN_GRAD_CLIP
    assert not torch.allclose(policy.drift(x, t_emb), policy.nn1(x, t_emb) + policy.nn2(t_emb) * 300.0 * torch.sin(x))
