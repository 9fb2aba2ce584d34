"""Targets: normalization (log Z exact), exact sampler moments and mode frequencies, autograd gradient."""
import math

import numpy as np
import torch

from workloads.samplers.targets import TARGETS, make_target


def test_gmm25_normalized_on_a_grid():
    target = make_target("gmm25")
    h = 0.05  # Riemann sums of smooth, fast-decaying integrands converge spectrally
    u = torch.arange(-14.0, 14.0 + h / 2, h, dtype=torch.float64)
    X, Y = torch.meshgrid(u, u, indexing="ij")
    x = torch.stack([X.ravel(), Y.ravel()], 1)
    target = target.double()
    log_r = torch.cat([target.log_reward(c) for c in x.split(200_000)])
    log_z = (torch.logsumexp(log_r, 0) + 2 * math.log(h)).item()
    assert abs(log_z - target.log_z) < 1e-3


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


def test_grad_log_reward_matches_finite_differences():
    target = make_target("gmm25").double()
    x = torch.randn(7, 2, dtype=torch.float64) * 4
    g = target.grad_log_reward(x)
    eps = 1e-6
    for d in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[d] = eps
        fd = (target.log_reward(x + e) - target.log_reward(x - e)) / (2 * eps)
        assert torch.allclose(g[:, d], fd, atol=1e-5)


def test_registry():
    for name, cls in TARGETS.items():
        t = make_target(name)
        assert isinstance(t, cls) and t.dim > 0 and math.isfinite(t.log_z)
