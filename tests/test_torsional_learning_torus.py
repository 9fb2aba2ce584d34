"""Torus trajectories of the Torsional-GFN: wrapped normal, sigma schedule, and the log PF / log PB bookkeeping
(exact importance weights of the zero-drift process, mixed numbers of torsions, off-policy log PF)."""

import math

import numpy as np
import pytest
import torch
from scipy.special import i0e, logsumexp

from workloads.torsional.torus import (
    KB_KCAL_PER_MOL_K,
    LOG_2PI,
    Exploration,
    backward_trajectories,
    log_reward,
    log_terminal_density,
    sample_trajectories,
    sample_wrapped_normal,
    sigma_schedule,
    wrapped_normal_log_prob,
)

# three trajectories with K_b = 2, 3, 1 torsions (a mixed batch)
TORSION_INDEX = torch.tensor([0, 0, 1, 1, 1, 2])
K_PER_TRAJ = torch.tensor([2.0, 3.0, 1.0])


def zero_drift(x, k):
    return torch.zeros_like(x)


def some_drift(x, k):
    """A non-trivial drift that depends on the state, the step and the torsion."""
    m = torch.arange(x.shape[-1], dtype=x.dtype)
    return 0.8 * torch.sin(x + m) + 0.05 * k[:, None].to(x.dtype)


@pytest.mark.parametrize("std", [0.02, 0.3, 1.0, math.pi, 2 * math.pi])
def test_wrapped_normal_integrates_to_one_and_matches_a_long_winding_sum(std):
    x = torch.linspace(0, 2 * math.pi, 20_001, dtype=torch.float64)[:-1]  # periodic rectangle rule
    for mean in (0.0, 2.5, 7.0, -1.0):
        lp = wrapped_normal_log_prob(x, torch.tensor(mean, dtype=torch.float64), std)
        assert abs(lp.exp().mean().item() * 2 * math.pi - 1.0) < 1e-6
        n = np.arange(-60, 61)[:, None] * 2 * np.pi
        ref = logsumexp(-0.5 * ((x.numpy() - mean + n) / std) ** 2, axis=0) - math.log(std * math.sqrt(2 * math.pi))
        assert np.allclose(lp.numpy(), ref, atol=1e-6)


def test_wrapped_normal_sampling_moments():
    """E[exp(i x)] = exp(i m - s^2 / 2) for x ~ WN(m, s^2)."""
    g = torch.Generator().manual_seed(0)
    for mean, std in ((1.0, 0.5), (5.0, 1.5)):
        x = sample_wrapped_normal(torch.full((200_000,), mean, dtype=torch.float64), std, g)
        assert x.min() >= 0 and x.max() < 2 * math.pi
        c = torch.complex(x.cos().mean(), x.sin().mean())
        expected = complex(math.cos(mean), math.sin(mean)) * math.exp(-0.5 * std**2)
        assert abs(c.item() - expected) < 0.005


def test_sigma_schedule_is_log_spaced_pi_to_one_hundredth_pi():
    s = sigma_schedule(20)
    assert s.shape == (20,)
    assert math.isclose(s[0].item(), math.pi, rel_tol=1e-6) and math.isclose(s[-1].item(), 0.01 * math.pi, rel_tol=1e-5)
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, ratios[0].expand(19), rtol=1e-5)
    assert sigma_schedule(1).tolist() == pytest.approx([math.pi])


def test_log_reward_is_minus_energy_over_kt_once():
    assert KB_KCAL_PER_MOL_K == 0.001987204118
    assert log_reward(1.0, 298.15) == pytest.approx(-1.0 / (0.001987204118 * 298.15))
    assert torch.allclose(
        log_reward(torch.tensor([2.0, -3.0]), 300.0), torch.tensor([2.0, -3.0]) / (-KB_KCAL_PER_MOL_K * 300)
    )


def _direct_log_probs(drift_fn, angles, torsion_index, B):
    """Step by step in float64 with an explicit winding sum (independent of the batched reshapes)."""
    S = angles.shape[1] - 1
    sigma = sigma_schedule(S).double().numpy()
    a = angles.double()
    n = np.arange(-20, 21) * 2 * np.pi

    def log_wn(x, m, s):  # s: one std, or one per torsion [M, 1]
        s = np.broadcast_to(np.asarray(s, dtype=np.float64).reshape(-1, 1), (len(x), 1))
        return logsumexp(-0.5 * ((x[:, None] - m[:, None] + n) / s) ** 2, axis=1) - np.log(
            s[:, 0] * math.sqrt(2 * math.pi)
        )

    lpf = np.full(angles.shape[0], -LOG_2PI)
    lpb = np.zeros(angles.shape[0])
    for k in range(S):
        x = a[:, k]
        out = drift_fn(x[None].float(), torch.tensor([k]))
        mu, r = out if isinstance(out, tuple) else (out, torch.ones(1, len(x)))
        lpf += log_wn(a[:, k + 1].numpy(), (x + mu[0].double()).numpy(), sigma[k] * r[0].double().numpy())
        lpb += log_wn(x.numpy(), a[:, k + 1].numpy(), sigma[k])
    to_b = lambda v: np.bincount(torsion_index.numpy(), weights=v, minlength=B)
    return to_b(lpf), to_b(lpb)


def drift_and_std(x, k):
    """A drift with its own std per torsion and state (PF's std r sigma_k, PB's still sigma_k)."""
    return some_drift(x, k), 0.5 + 0.4 * torch.cos(x) ** 2


@pytest.mark.parametrize("some_drift", [some_drift, drift_and_std])
def test_log_pf_and_log_pb_match_a_direct_computation_on_and_off_policy(some_drift):
    """With gradient log PF is recomputed over all steps; without (evaluation) it is accumulated while sampling."""
    g = torch.Generator().manual_seed(0)
    for exploration, grad in [
        (None, True),
        (None, False),
        (Exploration(), True),
        (Exploration(), False),
        (Exploration(noise_prob=0.5, noise_factor=3.0, temperature=2.0), False),
    ]:
        with torch.set_grad_enabled(grad):
            traj = sample_trajectories(some_drift, TORSION_INDEX, 3, 7, exploration, g)
        assert traj.angles.shape == (6, 8) and traj.log_pf.shape == (3,) and traj.log_pb.shape == (3,)
        assert traj.angles.min() >= 0 and traj.angles.max() < 2 * math.pi
        lpf, lpb = _direct_log_probs(some_drift, traj.angles, TORSION_INDEX, 3)
        assert np.allclose(traj.log_pf.numpy(), lpf, atol=2e-3), (traj.log_pf, lpf)
        assert np.allclose(traj.log_pb.numpy(), lpb, atol=2e-3)
    back = backward_trajectories(some_drift, TORSION_INDEX, traj.terminal + 4 * math.pi, 3, num_steps=7, generator=g)
    assert torch.allclose(back.terminal, traj.terminal, atol=1e-5)
    lpf, lpb = _direct_log_probs(some_drift, back.angles, TORSION_INDEX, 3)
    assert np.allclose(back.log_pf.numpy(), lpf, atol=2e-3) and np.allclose(back.log_pb.numpy(), lpb, atol=2e-3)


def test_zero_drift_importance_weights_are_exact_for_a_uniform_target():
    """Zero drift: PF is a symmetric random walk from a uniform start, PB its exact reversal, the terminal marginal
    uniform; so log R + log PB - log PF = K_b log 2 pi = log Z (R = 1) on every trajectory, on or off policy."""
    g = torch.Generator().manual_seed(1)
    log_z = K_PER_TRAJ * LOG_2PI  # [B]
    for exploration in (None, Exploration()):
        for S in (1, 20):
            traj = sample_trajectories(zero_drift, TORSION_INDEX, 3, S, exploration, g)
            assert torch.allclose(traj.log_pb - traj.log_pf, log_z, atol=1e-3)
    back = backward_trajectories(zero_drift, TORSION_INDEX, torch.rand(6, generator=g) * 7, 3, 20, g)
    assert torch.allclose(back.log_pb - back.log_pf, log_z, atol=1e-3)
    log_p = log_terminal_density(zero_drift, TORSION_INDEX, torch.rand(6, generator=g) * 7, 3, 20, 4, g)
    assert torch.allclose(log_p, -log_z, atol=1e-3)  # the uniform density


def test_zero_drift_importance_sampling_estimates_a_von_mises_log_z():
    """log R(x) = sum_m kappa cos(x_m), Z = (2 pi I0(kappa))^K: logmeanexp(log w) -> log Z within MC error."""
    kappa, B, K = 1.0, 4000, 2
    torsion_index = torch.arange(B).repeat_interleave(K)
    traj = sample_trajectories(zero_drift, torsion_index, B, 20, None, torch.Generator().manual_seed(2))
    log_r = torch.zeros(B).index_add_(0, torsion_index, kappa * traj.terminal.cos())  # [B]
    log_w = (log_r + traj.log_pb - traj.log_pf).double()
    est = (torch.logsumexp(log_w, 0) - math.log(B)).item()
    exact = K * (math.log(2 * math.pi * i0e(kappa)) + kappa)
    assert abs(est - exact) < 0.05, (est, exact)


def test_exploration_widens_late_steps_and_log_pf_stays_on_policy():
    g = torch.Generator().manual_seed(3)
    B = 2000
    idx = torch.arange(B)
    sigma_last = sigma_schedule(10)[-1].item()
    for factor in (1.0, 4.0):
        traj = sample_trajectories(zero_drift, idx, B, 10, Exploration(noise_prob=1.0, noise_factor=factor), g)
        step = torch.remainder(traj.angles[:, -1] - traj.angles[:, -2] + math.pi, 2 * math.pi) - math.pi
        assert abs(step.std().item() / sigma_last - factor) < 0.1 * factor
    # the widened steps are unlikely under the unmodified policy
    on = sample_trajectories(zero_drift, idx, B, 10, None, g)
    assert traj.log_pf.mean() < on.log_pf.mean() - 10


def test_importance_sampled_terminal_density_of_a_drifted_policy_integrates_to_one():
    """p_T(x) = E_PB[PF / PB] for a non-zero drift: on a grid over one torsion it integrates to ~1 (J = 64
    backward trajectories per point; logmeanexp is biased low by O(Var / J))."""
    n = 180
    x = (torch.arange(n) + 0.5) * 2 * math.pi / n  # [n] one torsion per trajectory

    def gentle_drift(x, k):  # a concentrated terminal density would need far more backward draws
        return sigma_schedule(10)[k][:, None] * 0.7 * torch.sin(x - 1.0)

    log_p = log_terminal_density(
        gentle_drift, torch.arange(n), x, n, num_steps=10, num_backward=64, generator=torch.Generator().manual_seed(4)
    )
    integral = log_p.double().exp().mean().item() * 2 * math.pi
    assert abs(integral - 1.0) < 0.05, integral
    assert log_p.std() > 0.5  # far from the uniform density
