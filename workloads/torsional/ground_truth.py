"""Exact Boltzmann density of the torsions on a grid over the whole torus, and metrics of samples against it.

For a fixed molecule and local structure, energy E(x) kcal/mol of torsion angles x in [0, 2 pi)^K:
    p(x) = exp(-E(x)/kT) / Z,     Z = int_{[0, 2pi)^K} exp(-E(x)/kT) dx
on n^K cells of side h = 2 pi / n, energies at the cell centres (midpoint rule, exponentially accurate for
smooth periodic E):
    log Z = log( h^K sum_cells exp(-E_c/kT) ),      log p_c = -E_c/kT - log Z    (density w.r.t. Lebesgue)
cell probability P_c = h^K p_c.

Histogram metrics compare the sample histogram Q and the grid's P on the SAME bins: the grid cells, or
coarser bins made by summing cells (`bins` per dimension must divide the grid's; the issue's check uses
15-degree bins, bins=24, with grids of 72 or 48 cells per dimension):
    JSD(P, Q)  = 1/2 KL(P || M) + 1/2 KL(Q || M),  M = (P + Q)/2    (nats, in [0, log 2]; no epsilon needed)
    KL(Q || P) (kl_model_to_true) and KL(P || Q) (kl_true_to_model) in nats, on P and Q smoothed as
        P_eps = (P + eps) / (1 + n_bins eps),  eps = KL_EPSILON = 1e-6
    so that bins empty in the samples (or of underflowing true mass) give a large finite term, not inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, xlogy
from scipy.stats import wasserstein_distance

KL_EPSILON = 1e-6
"""Additive smoothing of both histograms for the two KLs (see module docstring)."""
MAX_GRID_TORSIONS = 3
"""An exact grid over K torsions has n^K cells: 72^2 = 5,184 energies per structure, 48^3 = 110,592 for K = 3 (the
learner's grid); 72^4 would be 27 M, 72^9 5e16. So a sweep's molecules (all of them evaluated against a grid) may
have at most 3 torsions (config.py checks it)."""
MAX_GRID_CELLS = 1 << 20
"""The most cells grid_density builds (about 50 MB of arrays): 1024^2 or 101^3."""


def grid_torsion_problem(num_torsions: int) -> str | None:
    """Why a molecule with num_torsions torsions has no exact grid (the MoleculeError's words), or None."""
    if num_torsions <= MAX_GRID_TORSIONS:
        return None
    return (
        f"it has {num_torsions} torsions, more than the {MAX_GRID_TORSIONS} of an exact grid: a sweep evaluates "
        "every structure against the exact Boltzmann density on a grid over its torsions (grid_bins^K energies), "
        f"which is out of reach beyond {MAX_GRID_TORSIONS}"
    )


@dataclass
class GridDensity:
    log_density: np.ndarray
    """[n]*K log p at the cell centres, normalized over the torus (density w.r.t. Lebesgue measure)."""
    energies: np.ndarray
    """[n]*K kcal/mol at the cell centres."""
    log_z: float
    """log int exp(-E/kT) dx over the torus (cell volume times sum)."""
    bin_edges: np.ndarray
    """[n+1] edges in [0, 2 pi], the same in every dimension."""
    kT: float
    """kcal/mol."""

    @property
    def num_torsions(self) -> int:
        return self.log_density.ndim

    @property
    def bins_per_dim(self) -> int:
        return self.log_density.shape[0]

    @property
    def cell_volume(self) -> float:
        return (2.0 * math.pi / self.bins_per_dim) ** self.num_torsions

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.bin_edges[1:] + self.bin_edges[:-1])  # [n]

    def cell_probabilities(self) -> np.ndarray:
        """[n]*K P_c = h^K p_c, sums to 1."""
        return np.exp(self.log_density) * self.cell_volume


def grid_density(
    energy_fn: Callable[[np.ndarray], np.ndarray],
    num_torsions: int,
    bins_per_dim: int,
    kT: float,
    chunk_size: int = 8192,
) -> GridDensity:
    """Evaluate energy_fn (angles [M, K] radians -> [M] kcal/mol) at the n^K cell centres, in chunks.
    Raises ValueError beyond MAX_GRID_CELLS cells."""
    K, n = num_torsions, bins_per_dim
    if n**K > MAX_GRID_CELLS:
        raise ValueError(f"an exact grid of {n}^{K} cells is beyond the bound of {MAX_GRID_CELLS} (MAX_GRID_CELLS)")
    edges = np.linspace(0.0, 2.0 * math.pi, n + 1)  # [n+1]
    centres = 0.5 * (edges[1:] + edges[:-1])  # [n]
    flat = np.stack(np.meshgrid(*([centres] * K), indexing="ij"), axis=-1).reshape(-1, K)  # [n^K, K]
    energies = np.concatenate(
        [
            np.asarray(energy_fn(flat[i : i + chunk_size]), dtype=np.float64).reshape(-1)
            for i in range(0, len(flat), chunk_size)
        ]
    )  # [n^K]
    log_r = -energies / kT  # [n^K]
    cell_volume = (2.0 * math.pi / n) ** K
    log_z = float(logsumexp(log_r) + math.log(cell_volume))
    shape = (n,) * K
    return GridDensity((log_r - log_z).reshape(shape), energies.reshape(shape), log_z, edges, kT)


def exact_samples(grid: GridDensity, n: int, seed: int = 0) -> np.ndarray:
    """[n, K] exact draws from the piecewise-constant grid density: a cell by P_c, then uniform within it."""
    rng = np.random.default_rng(seed)
    p = grid.cell_probabilities().reshape(-1)
    cells = rng.choice(p.size, size=n, p=p / p.sum())  # [n]
    idx = np.stack(np.unravel_index(cells, grid.log_density.shape), axis=-1)  # [n, K]
    h = 2.0 * math.pi / grid.bins_per_dim
    return grid.bin_edges[idx] + rng.uniform(0.0, h, size=idx.shape)  # [n, K]


def _coarse(prob: np.ndarray, bins: int) -> np.ndarray:
    """Sum cells into `bins` per dimension (bins must divide the grid's cells per dimension)."""
    n, K = prob.shape[0], prob.ndim
    if n % bins:
        raise ValueError(f"{bins} bins per dimension do not divide the grid's {n} cells")
    f = n // bins
    return prob.reshape(*[s for _ in range(K) for s in (bins, f)]).sum(axis=tuple(range(1, 2 * K, 2)))


def bins_for_width(degrees: float) -> int:
    """Bins per dimension of the given width: 15 degrees -> 24."""
    return int(round(360.0 / degrees))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(xlogy(p, p) - xlogy(p, q)))


def histogram_metrics(samples: np.ndarray, grid: GridDensity, bins: int | None = None) -> dict[str, float]:
    """jsd, kl_model_to_true, kl_true_to_model (nats) between samples [S, K] (radians, any range) and the grid,
    on the grid's cells (bins None) or on `bins` per dimension made by summing cells (module docstring)."""
    samples = np.mod(np.asarray(samples, dtype=np.float64), 2.0 * math.pi).reshape(-1, grid.num_torsions)
    bins = bins or grid.bins_per_dim
    p = _coarse(grid.cell_probabilities(), bins).reshape(-1)  # [bins^K]
    p = p / p.sum()
    idx = np.minimum((samples / (2.0 * math.pi) * bins).astype(np.int64), bins - 1)  # [S, K]
    q = np.bincount(np.ravel_multi_index(idx.T, (bins,) * grid.num_torsions), minlength=p.size) / len(samples)
    m = 0.5 * (p + q)
    jsd = 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    smooth = lambda x: (x + KL_EPSILON) / (1.0 + x.size * KL_EPSILON)
    return {
        "jsd": jsd,
        "kl_model_to_true": _kl(smooth(q), smooth(p)),
        "kl_true_to_model": _kl(smooth(p), smooth(q)),
    }


def log_z_error(log_z_estimate: float, grid: GridDensity) -> float:
    """Signed error log Z_hat - log Z of an estimate against the grid (use abs() for |Delta log Z|)."""
    return float(log_z_estimate) - grid.log_z


def effective_sample_size(log_weights) -> tuple[float, float]:
    """Kish ESS = (sum w)^2 / sum w^2 computed in log space, and ESS / n."""
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    ess = float(np.exp(2.0 * logsumexp(lw) - logsumexp(2.0 * lw)))
    return ess, ess / lw.size


def energy_w1(sample_energies: np.ndarray, grid: GridDensity) -> float:
    """1-Wasserstein distance (kcal/mol) between the sampled energies and the grid energies weighted by P_c."""
    return float(
        wasserstein_distance(
            np.asarray(sample_energies, dtype=np.float64).reshape(-1),
            grid.energies.reshape(-1),
            v_weights=grid.cell_probabilities().reshape(-1),
        )
    )
