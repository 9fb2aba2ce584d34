"""SmoothedScore: the Tweedie estimate of grad log (R * N(0, c_k)) against the same quantity from an exact grid
convolution on the torus, determinism (log PF must be able to recompute the drift), and the local score at the
late steps."""
import math

import pytest
import torch

from workloads.torsional.config import TorsionalConfig
from workloads.torsional.data import zero_shot_entry
from workloads.torsional.energy_torch import TorchTorsionalEnergy
from workloads.torsional.smoothed_score import SmoothedScore
from workloads.torsional.torus import kt_kcal_mol, sigma_schedule

KT = kt_kcal_mol(298.15)


@pytest.fixture(scope="module")
def energy():
    config = TorsionalConfig()
    return TorchTorsionalEnergy([zero_shot_entry(s, "etkdg", config) for s in ("COC=O", "CCCC")])


def _grid_smoothed_score(energy, entry, x, c, bins=72, windings=3):
    """d/dx log sum_y R(y) WN(x - y; c) on a bins^K grid (K = 2), by central differences; x [2] -> [2]."""
    y = (torch.arange(bins, dtype=torch.float64) + 0.5) * 2 * math.pi / bins
    grid = torch.stack(torch.meshgrid(y, y, indexing="ij"), -1).reshape(-1, 2)  # [bins^2, 2]
    log_r = -energy.energies(torch.full((len(grid),), entry), torch.cat([grid, torch.zeros(len(grid), 1)], 1)) / KT
    n = torch.arange(-windings, windings + 1, dtype=torch.float64) * 2 * math.pi

    def log_p(point):
        d = point - grid  # [G, 2]
        log_wn = torch.logsumexp(-0.5 * (d[..., None] + n) ** 2 / c, -1).sum(-1)  # [G]
        return torch.logsumexp(log_r + log_wn, 0)

    h = 1e-4
    return torch.stack([(log_p(x + h * e) - log_p(x - h * e)) / (2 * h) for e in torch.eye(2, dtype=torch.float64)])


def test_tweedie_estimate_matches_the_exact_smoothed_score(energy):
    score = SmoothedScore(energy, KT, num_steps=20, num_probes=100_000, switch_variance=0.3, seed=1)
    k = 5  # c_k ~ 2.3 rad^2: noisy enough that the smoothed and local scores differ
    c = float(score.c[k])
    assert bool(score.early[k]) and c > 0.3
    x = torch.tensor([[0.3, 2.0], [2.9, 4.4], [5.5, 1.0]], dtype=torch.float64)  # 3 trajectories of methyl formate
    estimate = score(torch.zeros(3, dtype=torch.long), torch.arange(3).repeat_interleave(2), x.reshape(1, 6),
                     torch.tensor([k]))[0].reshape(3, 2)
    exact = torch.stack([_grid_smoothed_score(energy, 0, xi, c) for xi in x])
    local = -torch.stack([energy.gradient(torch.zeros(1, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                                          xi[None]) for xi in x])[:, 0] / KT
    assert (estimate - exact).norm() < 0.06 * exact.norm(), (estimate, exact)  # measured 0.02 (MC error)
    assert (local - exact).norm() > 10 * exact.norm()  # the smoothing matters here


def test_score_is_deterministic_and_local_at_the_late_steps(energy):
    score = SmoothedScore(energy, KT, num_steps=20, num_probes=16, switch_variance=0.3)
    entries = torch.tensor([1, 0, 1])  # butane (K = 3), methyl formate (K = 2), butane
    torsion_index = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    x = torch.rand(20, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 * math.pi
    k = torch.arange(20)
    first, second = score(entries, torsion_index, x, k), score(entries, torsion_index, x, k)
    assert torch.equal(first, second) and torch.isfinite(first).all()
    late = ~score.early
    assert late.any() and score.early.any()
    local = energy.gradient(entries, torsion_index, x[late]) / -KT
    assert torch.allclose(first[late], local)
    assert not torch.allclose(first[score.early], energy.gradient(entries, torsion_index, x[score.early]) / -KT)
    # rows at the same step give the same values whether evaluated together or alone
    alone = score(entries, torsion_index, x[3:4], k[3:4])
    assert torch.allclose(alone, first[3:4])
    sigma2 = sigma_schedule(20).double().pow(2)
    assert torch.allclose(score.c, torch.stack([sigma2[j:].sum() for j in range(20)]))  # c_k = sum_{j >= k} sigma_j^2
