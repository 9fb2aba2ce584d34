"""Grid ground truth and metrics: analytic log Z of von Mises energies (K = 2 and 3), exact draws score a small
JSD and a wrong (uniform) sampler a large one, ESS, energy W1; and propane with MMFF94s (the issue's figure)."""

import math

import numpy as np
import pytest
from rdkit.Chem import AllChem
from scipy.special import i0e

from workloads.torsional.ground_truth import (
    bins_for_width,
    effective_sample_size,
    energy_w1,
    exact_samples,
    grid_density,
    histogram_metrics,
    log_z_error,
)
from workloads.torsional.torus import kt_kcal_mol

KT = kt_kcal_mol(298.15)
KAPPAS = (2.0, 4.0, 1.0)
SHIFTS = (0.0, 1.0, 4.0)


def von_mises_energy(K):
    """E/kT = -sum_m kappa_m cos(x_m - c_m); log Z = sum_m log(2 pi I0(kappa_m))."""

    def energy_fn(x):
        return -KT * sum(KAPPAS[m] * np.cos(x[:, m] - SHIFTS[m]) for m in range(K))

    return energy_fn, sum(math.log(2 * math.pi * i0e(k)) + k for k in KAPPAS[:K])


@pytest.fixture(scope="module")
def grid2():
    energy_fn, _ = von_mises_energy(2)
    return grid_density(energy_fn, 2, 72, KT)


@pytest.mark.parametrize("K, bins", [(2, 72), (3, 36)])
def test_grid_log_z_matches_the_analytic_von_mises_value(K, bins):
    energy_fn, log_z = von_mises_energy(K)
    grid = grid_density(energy_fn, K, bins, KT, chunk_size=1000)  # several chunks
    assert grid.log_density.shape == (bins,) * K and grid.energies.shape == (bins,) * K
    assert abs(log_z_error(grid.log_z, grid)) == 0.0
    assert abs(grid.log_z - log_z) < 1e-6 * abs(log_z)
    assert abs(grid.cell_probabilities().sum() - 1.0) < 1e-12
    x = np.stack(np.meshgrid(*([grid.centres] * K), indexing="ij"), -1).reshape(-1, K)
    assert np.allclose(grid.log_density.reshape(-1), -energy_fn(x) / KT - log_z, atol=1e-6)


def test_exact_samples_score_small_and_uniform_samples_large(grid2):
    bins = bins_for_width(15)
    assert bins == 24
    exact = exact_samples(grid2, 2000, seed=0)
    assert exact.shape == (2000, 2) and exact.min() >= 0 and exact.max() < 2 * math.pi
    good = histogram_metrics(exact, grid2, bins)
    bad = histogram_metrics(np.random.default_rng(0).uniform(0, 2 * math.pi, (2000, 2)), grid2, bins)
    assert good["jsd"] < 0.05 and bad["jsd"] > 0.2, (good, bad)
    assert good["kl_model_to_true"] < 0.2 and bad["kl_model_to_true"] > 1.0
    assert np.isfinite(good["kl_true_to_model"]) and bad["kl_true_to_model"] > good["kl_true_to_model"]
    many = histogram_metrics(exact_samples(grid2, 200_000, seed=1), grid2, bins)
    assert many["jsd"] < 0.1 * good["jsd"]  # the JSD of exact draws is finite-sample noise
    assert histogram_metrics(exact_samples(grid2, 20_000, seed=2), grid2)["jsd"] < 0.1  # on the 72 x 72 cells
    assert histogram_metrics(exact + 6 * math.pi, grid2, bins) == good  # angles are taken mod 2 pi
    with pytest.raises(ValueError):
        histogram_metrics(exact, grid2, bins=25)


def test_jsd_of_identical_and_disjoint_histograms(grid2):
    """JSD is 0 for samples in the one cell that holds all the mass, and log 2 for disjoint supports."""
    hot = grid_density(lambda x: -1e3 * KT * (np.cos(x[:, 0] - 0.1) + np.cos(x[:, 1] - 0.1)), 2, 24, KT)
    far = np.full((100, 2), math.pi)
    assert histogram_metrics(far, hot)["jsd"] == pytest.approx(math.log(2), abs=1e-9)
    near = np.full((100, 2), 0.1)
    assert histogram_metrics(near, hot)["jsd"] == pytest.approx(0.0, abs=1e-9)


def test_effective_sample_size():
    assert effective_sample_size(np.full(50, -3.7)) == pytest.approx((50.0, 1.0))
    ess, frac = effective_sample_size(np.array([0.0, -1e3, -1e3, -1e3]))
    assert ess == pytest.approx(1.0) and frac == pytest.approx(0.25)
    ess, _ = effective_sample_size(np.log([1.0, 1.0, 2.0]))
    assert ess == pytest.approx(16.0 / 6.0)


def test_energy_w1(grid2):
    energy_fn, _ = von_mises_energy(2)
    exact = energy_fn(exact_samples(grid2, 5000, seed=3))
    uniform = energy_fn(np.random.default_rng(3).uniform(0, 2 * math.pi, (5000, 2)))
    assert energy_w1(exact, grid2) < 0.05 * energy_w1(uniform, grid2)
    assert energy_w1(exact, grid2) < 0.1 * KT


def test_propane_mmff94s_exact_draws_match_the_issues_jsd():
    """The issue: 2,000 exact draws from propane's density give JSD ~ 0.024 at 15-degree bins (nats)."""
    from workloads.torsional.conformer import set_torsions
    from workloads.torsional.molecule import load_molecule

    m = load_molecule("CCC")
    ff = AllChem.MMFFGetMoleculeForceField(m.mol, AllChem.MMFFGetMoleculeProperties(m.mol, mmffVariant="MMFF94s"))
    pos = m.positions()

    def energy_fn(x):
        return np.array([ff.CalcEnergy(p.ravel().tolist()) for p in set_torsions(pos, m, x)])

    grid = grid_density(energy_fn, 2, 72, KT)
    jsd = [histogram_metrics(exact_samples(grid, 2000, seed), grid, 24)["jsd"] for seed in range(5)]
    assert 0.015 < np.mean(jsd) < 0.035, jsd
