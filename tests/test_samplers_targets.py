"""Targets: normalization (log Z exact), exact sampler moments and mode frequencies, autograd gradient;
the per-target sigma^2 default."""

import math
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from torch.distributions import Normal

from orchestrator.spec import load_sweep
from workloads.samplers.config import SIGMA2_BY_TARGET, SamplerConfig
from workloads.samplers.learner import SamplerLearner
from workloads.samplers.targets import TARGETS, make_target


def _log_z_on_2d_grid(target, lo: float, hi: float, h: float) -> float:
    """log of the Riemann sum of R on a square grid; for smooth, fast-decaying R it converges spectrally."""
    u = torch.arange(lo, hi + h / 2, h, dtype=torch.float64)
    X, Y = torch.meshgrid(u, u, indexing="ij")
    x = torch.stack([X.ravel(), Y.ravel()], 1)
    target = target.double()
    log_r = torch.cat([target.log_reward(c) for c in x.split(200_000)])
    return (torch.logsumexp(log_r, 0) + 2 * math.log(h)).item()


def test_gmm25_normalized_on_a_grid():
    target = make_target("gmm25")
    assert abs(_log_z_on_2d_grid(target, -14.0, 14.0, 0.05) - target.log_z) < 1e-3


def test_gmm25_exact_samples_moments_and_modes():
    target = make_target("gmm25")
    n = 50_000
    x = target.sample(n, seed=0).numpy()
    assert x.shape == (n, 2)
    # mixture moments: mean 0, variance = mean(mu^2 per axis) + 0.3 = 50 + 0.3
    assert np.abs(x.mean(0)).max() < 0.1
    assert np.allclose(x.var(0), 50.3, rtol=0.03)
    # mode frequencies ~ 1/25 each (5 sigma on the binomial count)
    mode = np.round(x / 5.0).astype(int) + 2
    counts = np.bincount(mode[:, 0] * 5 + mode[:, 1], minlength=25)
    p = 1 / 25
    assert np.abs(counts / n - p).max() < 5 * math.sqrt(p * (1 - p) / n)
    # within-mode covariance 0.3 I
    resid = x - 5.0 * np.round(x / 5.0)
    assert np.allclose(np.cov(resid.T), 0.3 * np.eye(2), atol=0.02)
    # deterministic in seed
    assert torch.equal(target.sample(10, seed=3), target.sample(10, seed=3))


# ---------------------------------------------------------------- 40GMM


def test_gmm40_is_fab_seed_0_and_leaves_the_global_rng_alone():
    with torch.random.fork_rng():
        torch.manual_seed(0)  # how FAB / DEM build it: the global RNG seeded 0, then torch.rand
        fab_mu = (torch.rand((40, 2)) - 0.5) * 2 * 40
        state = torch.get_rng_state()
        target = make_target("gmm40")
        assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(target.mu, fab_mu)
    assert math.isclose(target.std, math.log1p(math.e), rel_tol=1e-12)  # softplus(log_var_scaling = 1)
    assert target.mu.abs().max() <= 40.0 and target.mu.std() > 15.0  # spread over the [-40, 40]^2 box


def test_gmm40_normalized_on_a_grid():
    target = make_target("gmm40")  # means in [-40, 40]^2, std 1.31: the grid reaches 11 std past the box
    assert abs(_log_z_on_2d_grid(target, -55.0, 55.0, 0.25) - target.log_z) < 1e-6


def test_gmm40_exact_samples_sit_on_their_modes():
    target = make_target("gmm40")
    n, mu, s = 40_000, target.mu.double(), target.std
    x = target.sample(n, seed=0).double()
    # responsibilities r_k(x) = p(k | x), computed here with torch.distributions (not target.log_reward)
    log_nk = Normal(mu, s).log_prob(x[:, None, :]).sum(-1)  # [n, K]
    r = torch.softmax(log_nk, dim=1)  # [n, K]
    # E_p[r_k] = 1/K exactly, even where modes overlap; Var(r_k) <= p (1 - p): 5 sigma
    p = 1 / 40
    assert (r.mean(0) - p).abs().max() < 5 * math.sqrt(p * (1 - p) / n)
    # E_p[sum_k r_k (x - mu_k)(x - mu_k)^T] = s^2 I, the within-mode covariance
    resid = x[:, None, :] - mu[None]  # [n, K, 2]
    cov = torch.einsum("nk,nki,nkj->ij", r, resid, resid) / n
    assert torch.allclose(cov, torch.full((2,), s**2).diag().double(), atol=0.06)
    # every sample is within 6 std of some mode (P(chi_2 > 6) = e^-18 per sample)
    assert (resid.norm(dim=-1).min(1).values / s).max() < 6.0


# ---------------------------------------------------------------- Funnel


def test_funnel_log_reward_is_the_normalized_density():
    target = make_target("funnel").double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 10, generator=g, dtype=torch.float64) * 3  # includes the neck and the mouth
    ref = Normal(0.0, 3.0).log_prob(x[:, 0]) + Normal(0.0, torch.exp(0.5 * x[:, :1])).log_prob(x[:, 1:]).sum(-1)
    assert torch.allclose(target.log_reward(x), ref, atol=1e-10)


def test_funnel_log_z_by_importance_sampling():
    # proposal q: x0 ~ N(0, 3.5^2), x_i | x0 ~ N(0, 2 e^{x0}); the weight R / q is bounded, E_q[w^2] ~ 3.8
    target = make_target("funnel").double()
    n = 200_000
    g = torch.Generator().manual_seed(1)
    x0 = 3.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    q_std = torch.exp(0.5 * x0) * math.sqrt(2)
    xi = q_std * torch.randn(n, 9, generator=g, dtype=torch.float64)
    log_q = Normal(0.0, 3.5).log_prob(x0[:, 0]) + Normal(0.0, q_std).log_prob(xi).sum(-1)
    log_w = target.log_reward(torch.cat([x0, xi], 1)) - log_q
    log_z = (torch.logsumexp(log_w, 0) - math.log(n)).item()
    assert abs(log_z - target.log_z) < 0.02  # MC std ~ 0.004


def test_funnel_exact_samples():
    target = make_target("funnel")
    n = 100_000
    x = target.sample(n, seed=0).double()
    x0 = x[:, 0]
    assert abs(x0.mean().item()) < 0.05 and math.isclose(x0.var().item(), 9.0, rel_tol=0.03)
    z = x[:, 1:] * torch.exp(-0.5 * x0)[:, None]  # standardized: x_i | x0 ~ N(0, e^{x0}) => z ~ N(0, 1), indep. of x0
    assert z.mean(0).abs().max() < 0.02 and torch.allclose(z.var(0), torch.ones(9, dtype=torch.float64), rtol=0.03)
    corr = ((z - z.mean(0)) * (x0 - x0.mean())[:, None]).mean(0) / (z.std(0) * x0.std())
    assert corr.abs().max() < 0.02


# ---------------------------------------------------------------- Manywell


def test_manywell_log_z_by_per_coordinate_quadrature():
    target = make_target("manywell").double()
    h = 1e-3
    u = torch.arange(-6.0, 6.0 + h / 2, h, dtype=torch.float64)  # [G]
    log_z = 0.0
    for d in range(target.dim):  # Riemann sum of R along coordinate d, all other coordinates 0
        x = torch.zeros(len(u), target.dim, dtype=torch.float64)
        x[:, d] = u
        log_z += (torch.logsumexp(target.log_reward(x), 0) + math.log(h)).item()
        if d == 0:
            assert math.isclose(log_z, math.log(11784.50927), abs_tol=1e-6)
    # R factorizes over coordinates with R(0) = 1, so log Z is the sum of the 1-d log integrals
    x = target.sample(5, seed=0)
    one_hot = torch.eye(target.dim, dtype=torch.float64)[None] * x[:, None, :]  # [5, D, D]: x_d alone
    per_coordinate = target.log_reward(one_hot.reshape(-1, target.dim)).reshape(5, target.dim)
    assert target.log_reward(torch.zeros(1, target.dim, dtype=torch.float64)).item() == 0.0
    assert torch.allclose(target.log_reward(x), per_coordinate.sum(1), atol=1e-10)
    assert abs(log_z - target.log_z) < 1e-6
    assert abs(target.log_z - 164.70) < 0.01  # the paper's 16 (log 11784.50927 + log(2 pi) / 2)


def test_manywell_exact_samples_match_the_density():
    target = make_target("manywell")
    n = 50_000
    x = target.sample(n, seed=0).double()
    a, b = x[:, 0::2].ravel().numpy(), x[:, 1::2].ravel().numpy()  # 16 n draws of each coordinate
    N = a.size
    # first coordinate: histogram against the bin masses of exp(-a^4 + 6 a^2 + a/2) / Z_1
    density = lambda t: math.exp(-(t**4) + 6 * t**2 + 0.5 * t - target.log_z1)
    edges = np.linspace(-3.0, 3.0, 61)
    mass = np.array([quad(density, lo, hi)[0] for lo, hi in zip(edges[:-1], edges[1:])])
    assert abs(mass.sum() - 1) < 1e-6  # [-3, 3] holds all of it
    freq = np.histogram(a, edges)[0] / N
    assert np.all(np.abs(freq - mass) < 5 * np.sqrt(mass * (1 - mass) / N) + 1e-6)
    mean_a = quad(lambda t: t * density(t), -6, 6, points=[-1.73, 1.73])[0]
    assert abs(a.mean() - mean_a) < 5 * a.std() / math.sqrt(N)
    # second coordinate: N(0, 1)
    assert abs(b.mean()) < 0.01 and math.isclose(b.var(), 1.0, rel_tol=0.01)


def test_manywell_minor_mode_fraction():
    """The share of wells in the lighter mode (a < 0): the quadrature mass on exact samples, 0 and 1 at the ends."""
    target = make_target("manywell")
    density = lambda t: math.exp(-(t**4) + 6 * t**2 + 0.5 * t - target.log_z1)
    minor_mass = quad(density, -6, 0, points=[-1.73])[0]  # 0.156
    n = 20_000
    fraction = target.mode_metrics(target.sample(n, seed=3))["minor_mode_fraction"]
    assert abs(fraction - minor_mass) < 5 * math.sqrt(minor_mass * (1 - minor_mass) / (16 * n))
    x = torch.full((4, 32), 1.7)
    assert target.mode_metrics(x)["minor_mode_fraction"] == 0.0
    x[:, 0::2] = -1.7
    assert target.mode_metrics(x)["minor_mode_fraction"] == 1.0


# ---------------------------------------------------------------- every target


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_sample_shape_device_and_seed(name):
    target = make_target(name)
    x = target.sample(64, seed=3)
    assert x.shape == (64, target.dim) and x.dtype == torch.float32
    assert torch.equal(x, target.sample(64, seed=3)) and not torch.equal(x, target.sample(64, seed=4))
    assert torch.isfinite(target.log_reward(x)).all()
    # the samples follow the buffers (device and dtype) and match the float32 ones
    x64 = target.double().sample(64, seed=3)
    assert x64.dtype == torch.float64 and torch.allclose(x64.float(), x, atol=1e-4)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_grad_log_reward_matches_finite_differences(name):
    target = make_target(name).double()
    x = target.sample(7, seed=1)
    for points in (x, 3 * x):  # on the typical set and off it
        assert torch.isfinite(target.grad_log_reward(points)).all()
    g = target.grad_log_reward(x)
    eps = 1e-6
    for d in range(target.dim):
        e = torch.zeros(target.dim, dtype=torch.float64)
        e[d] = eps
        fd = (target.log_reward(x + e) - target.log_reward(x - e)) / (2 * eps)
        assert torch.allclose(g[:, d], fd, rtol=1e-6, atol=1e-5)


def test_registry_and_config_agree():
    for name, cls in TARGETS.items():
        t = make_target(name)
        assert isinstance(t, cls) and t.dim > 0 and math.isfinite(t.log_z)
    targets = set(get_args(SamplerConfig.model_fields["target"].annotation))
    assert targets == set(TARGETS) == set(SIGMA2_BY_TARGET)
    # sigma^2 defaults per target (arXiv:2402.05098): 5 for the mixtures, 1 for Funnel and Manywell
    targets = ("gmm25", "gmm40", "funnel", "manywell")
    assert [SamplerConfig(target=t).diffusion_sigma2 for t in targets] == [5.0, 5.0, 1.0, 1.0]
    assert SamplerConfig(target="funnel", sigma2=2.5).diffusion_sigma2 == 2.5


def test_sigma2_follows_a_target_switch():
    """sigma^2 stays unset in the config and is resolved from the target when read, so a target changed
    after validation (model_copy, or the orchestrator re-validating a dumped config with a sampled
    `target`) gets its own default; an explicit sigma2 is kept."""
    base = SamplerConfig(target="gmm25")
    assert base.sigma2 is None and base.diffusion_sigma2 == 5.0
    assert base.model_copy(update={"target": "funnel"}).diffusion_sigma2 == 1.0
    assert SamplerConfig.model_validate(base.model_dump() | {"target": "manywell"}).diffusion_sigma2 == 1.0
    sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "samplers.yaml")
    assert sweep.config.target == "gmm25" and sweep.resolved_config({"target": "funnel"}).diffusion_sigma2 == 1.0
    explicit = SamplerConfig(target="gmm25", sigma2=2.5)
    assert SamplerConfig.model_validate(explicit.model_dump() | {"target": "funnel"}).diffusion_sigma2 == 2.5
    # the learner samples with it: the untrained (zero-drift) sampler's terminal variance is sigma^2
    small = {"num_steps": 5, "hidden_dim": 16, "time_embedding_dim": 8}
    switched = SamplerConfig(**small).model_copy(update={"target": "funnel"})
    for config, sigma2 in ((SamplerConfig(**small), 5.0), (switched, 1.0)):
        traj, _ = SamplerLearner(config, seed=0).sample(4000, torch.Generator().manual_seed(0))
        assert abs(traj.terminal.var().item() / sigma2 - 1) < 0.05, (config.target, traj.terminal.var())
