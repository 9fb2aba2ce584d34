"""basins.py: the minimum search and Laplace masses against an exact grid, and BasinMixtureScore against autograd
of the wrapped mixture density it claims to differentiate, in a batch that mixes molecules with 2 and 3 torsions."""

import math

import pytest
import torch

from workloads.torsional import basins as basins_module
from workloads.torsional.basins import BasinMixtureScore, cached_basins, find_basins
from workloads.torsional.config import TorsionalConfig
from workloads.torsional.data import zero_shot_entry
from workloads.torsional.energy_torch import TorchTorsionalEnergy
from workloads.torsional.torus import kt_kcal_mol, remaining_noise_variance

KT = kt_kcal_mol(298.15)
SMILES = ("COC=O", "CCCC", "COc1ccccc1")


@pytest.fixture(scope="module")
def energy():
    config = TorsionalConfig()
    return TorchTorsionalEnergy([zero_shot_entry(s, "etkdg", config) for s in SMILES])


@pytest.mark.parametrize("entry", [0, 2])
def test_laplace_masses_match_the_grid_basin_masses(energy, entry):
    """Each grid cell is given to its nearest basin (Mahalanobis); the basins' exact Boltzmann masses then match
    the Laplace masses: total variation 0.003 for methyl formate, 0.16 for anisole, whose methoxy basins are
    anharmonic (measured)."""
    basins = find_basins(energy, entry, KT)
    bins = 96
    centers = (torch.arange(bins, dtype=torch.float64) + 0.5) * 2 * math.pi / bins
    grid = torch.cartesian_prod(centers, centers)  # [G, 2]
    padded = torch.cat([grid, torch.zeros(len(grid), energy.k_max - 2, dtype=torch.float64)], 1)
    log_r = -energy.energies(torch.full((len(grid),), entry), padded) / KT
    p = torch.softmax(log_r, 0)
    d = torch.remainder(grid[:, None] - basins.means[None] + math.pi, 2 * math.pi) - math.pi  # [G, Nb, 2]
    mahalanobis = torch.einsum("gbi,bij,gbj->gb", d, torch.linalg.inv(basins.covariances), d)
    exact = torch.zeros(len(basins.means), dtype=torch.float64).index_add_(0, mahalanobis.argmin(1), p)
    laplace = torch.softmax(basins.log_mass, 0)
    assert exact.max() < 0.95  # several basins carry mass: the split is what is tested
    total_variation = 0.5 * (laplace - exact).abs().sum()
    assert total_variation < (0.01 if entry == 0 else 0.2), (laplace, exact)
    # every basin found is a distinct minimum with a positive-definite covariance
    assert torch.linalg.eigvalsh(basins.covariances).min() > 0


def test_score_is_the_gradient_of_the_wrapped_mixture(energy):
    score = BasinMixtureScore(energy, KT, num_steps=20, max_windings=2)
    entry_index = torch.tensor([0, 1, 0])  # K = 2, 3, 2 torsions: a mixed batch
    torsion_index = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    generator = torch.Generator().manual_seed(0)
    for k in (3, 9, 16):
        c = float(remaining_noise_variance(20)[k])
        x = torch.rand(2, 7, generator=generator, dtype=torch.float64) * 2 * math.pi
        got = score(entry_index, torsion_index, x, torch.tensor([k, k]))  # [2, 7]
        starts = [0, 2, 5]
        for p in range(2):
            for b, e in enumerate(entry_index.tolist()):
                K = int(energy.num_torsions[e])
                point = x[p, starts[b] : starts[b] + K].clone().requires_grad_(True)
                log_p = _log_mixture(score.basins[e], point, c, windings=3)
                (expected,) = torch.autograd.grad(log_p, point)
                assert torch.allclose(got[p, starts[b] : starts[b] + K], expected, rtol=1e-6, atol=1e-8), (k, e)


def _log_mixture(basins, x, c, windings):
    """log sum_b Z_b sum_n N(x + 2 pi n; m_b, Sigma_b + c I), written out independently of BasinMixtureScore."""
    K = x.numel()
    n = torch.cartesian_prod(*[torch.arange(-windings, windings + 1, dtype=torch.float64)] * K).reshape(-1, K)
    terms = []
    for m, cov, log_z in zip(basins.means, basins.covariances, basins.log_mass):
        dist = torch.distributions.MultivariateNormal(m, cov + c * torch.eye(K, dtype=torch.float64))
        terms.append(log_z + dist.log_prob(x + 2 * math.pi * n))
    return torch.logsumexp(torch.cat(terms), 0)


def test_basins_are_cached_per_structure_force_field_and_kt(energy, tmp_path, monkeypatch):
    searches = []
    search = basins_module.find_basins
    monkeypatch.setattr(basins_module, "find_basins", lambda *args: searches.append(args[1:]) or search(*args))
    first = cached_basins(energy, 0, KT, 0, tmp_path)
    again = cached_basins(energy, 0, KT, 0, tmp_path)  # read back, not searched again
    assert len(searches) == 1 and len(list(tmp_path.glob("basins-*.pt"))) == 1
    for field in ("means", "covariances", "log_mass", "energies"):
        assert torch.equal(getattr(first, field), getattr(again, field))
    cached_basins(energy, 0, 2 * KT, 0, tmp_path)  # another temperature: another search and file
    cached_basins(energy, 2, KT, 2, tmp_path)  # another molecule
    assert len(searches) == 3 and len(list(tmp_path.glob("basins-*.pt"))) == 3
    score = BasinMixtureScore(energy, KT, num_steps=20, cache_dir=tmp_path)  # entries 0 and 2 from the cache
    assert [args[0] for args in searches[3:]] == [1]
    assert torch.equal(score.basins[0].means, first.means)
