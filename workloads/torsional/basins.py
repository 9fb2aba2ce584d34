"""The target as a mixture of its basins, and the exact score of that mixture smoothed by the noise to come.

For each local structure, gradient descent from a grid of starts on the torus finds the minima m_b of E; at each,
the Hessian H_b (finite differences of the exact gradient) gives the Laplace approximation of its basin
    R(x) = exp(-E(x) / kT)  ~=  sum_b Z_b N(x; m_b, Sigma_b),    Sigma_b = kT H_b^-1,
    log Z_b = -E(m_b) / kT + (K / 2) log 2 pi + (1 / 2) log det Sigma_b.
Smoothing by the noise still to come (c_k, torus.remaining_noise_variance) keeps it a mixture, wrapped on the torus:
    p_k(x) = sum_b Z_b sum_{n in Z^K} N(x + 2 pi n; m_b, Sigma_b + c_k I)
    grad log p_k(x) = - sum_{b, n} gamma_{b, n}(x) (Sigma_b + c_k I)^-1 (x + 2 pi n - m_b),
with gamma the responsibilities. The sum over n in {-W..W}^K has (2W+1)^K terms per basin (5^9 ~ 2 M for decane):
it is taken whole while Nb (2W+1)^K <= MAX_EXACT_TERMS_PER_ROW (every structure of <= 3 torsions with up to 512
basins at W = 2), and beyond that winding by winding along each torsion (`separable`):
    sum_n N(d + 2 pi n; 0, C)  ~=  N(d; 0, C) prod_i [sum_{n_i} N1(d_i + 2 pi n_i; 0, C_ii) / N1(d_i; 0, C_ii)]
    score ~= -C^-1 d~,   d~_i = sum_{n_i} gamma_i(n_i) (d_i + 2 pi n_i)
(d the nearest image, gamma_i the responsibilities of torsion i's windings): exact for a diagonal C, and near it where
it matters, as C = Sigma_b + c_k I is dominated by c_k I at the first steps, while at the last ones (small c_k)
only the nearest image counts. Rows are taken in chunks of at most SCORE_CHUNK_ELEMENTS per temporary.
This is the drift's guide (policy.py) without any probe of the energy: where
the probes' estimate (smoothed_score.py) splits mass between basins by which basins its few probes happen to hit,
this one splits it by the basins' Laplace masses. What it misses (anharmonic basins, shoulders) is the policy's to
learn. The search runs once per structure (~10^4 energies, ~1-4 s of CPU), also for molecules never trained on;
`cached_basins` keeps its result on disk (keyed by the molecule, its local structure, the force field, kT and
the search's settings), so a restarted actor, a resumed trial or a second trial on the same structures reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from workloads.torsional.energy_torch import TorchTorsionalEnergy
from workloads.torsional.torus import TWO_PI, remaining_noise_variance

STARTS_PER_TORSION = 8
"""Starts of the minimum search: an 8^K grid (K <= 3), else 512 uniform draws."""
DESCENT_STEPS = 300
FD_STEP_RAD = 1e-3
"""Central finite differences of the exact gradient: the Hessian's error is ~1e-6 relative."""
SAME_MINIMUM_RAD = 0.05
MAX_BASIN_VARIANCE_RAD2 = 1.0
"""Flat directions (a free rotor) are capped at this variance: the Laplace approximation means nothing beyond."""
MAX_RELATIVE_ENERGY_KCAL_MOL = 12.0
"""Minima this far above the lowest carry < 1e-8 of the mass and are dropped."""
MAX_EXACT_TERMS_PER_ROW = 1 << 16
"""Basins x windings per row up to which the sum over windings is taken over the whole cube {-W..W}^K (module
docstring); beyond, torsion by torsion."""
SCORE_CHUNK_ELEMENTS = 1 << 21
"""Elements (float64: 16 MB) of the largest temporary of the score over one chunk of rows (a training batch of the
reference molecules, 2,560 rows of 31 basins x 25 windings x 2 torsions, is two chunks: the same numbers)."""


@dataclass
class StructureBasins:
    """One structure's Laplace mixture: means [Nb, K] in [0, 2 pi), covariances [Nb, K, K] (rad^2), log_mass [Nb]."""

    means: Tensor
    covariances: Tensor
    log_mass: Tensor
    energies: Tensor
    """E(m_b) [Nb] kcal/mol."""


def _starts(num_torsions: int, generator: torch.Generator) -> Tensor:
    if num_torsions <= 3:
        axis = (torch.arange(STARTS_PER_TORSION, dtype=torch.float64) + 0.5) * TWO_PI / STARTS_PER_TORSION
        return torch.cartesian_prod(*[axis] * num_torsions).reshape(-1, num_torsions)
    return torch.rand(512, num_torsions, generator=generator, dtype=torch.float64) * TWO_PI


def find_basins(energy: TorchTorsionalEnergy, entry: int, kT: float, seed: int = 0) -> StructureBasins:
    """Minima of E over the torsions of structure `entry`, their Hessians and Laplace masses (module docstring)."""
    K, k_max = int(energy.num_torsions[entry]), energy.k_max
    generator = torch.Generator().manual_seed(seed)
    x = _starts(K, generator).to(energy.device)  # [N, K]

    def e_and_grad(angles: Tensor) -> tuple[Tensor, Tensor]:
        padded = torch.zeros(len(angles), k_max, dtype=torch.float64, device=energy.device)
        padded[:, :K] = angles
        rows = torch.full((len(angles),), entry, dtype=torch.long, device=energy.device)
        e, g = energy.energies_and_gradients(rows, padded)
        return e, g[:, :K]

    # Adam on the torus: its per-coordinate step (lr) is insensitive to the kcal/mol scale of the gradient
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    for t in range(1, DESCENT_STEPS + 1):
        lr = 0.05 if t <= DESCENT_STEPS * 2 // 3 else 0.005
        _, g = e_and_grad(x)
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        x = torch.remainder(x - lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8), TWO_PI)
    e, _ = e_and_grad(x)
    order = torch.argsort(e)
    kept: list[int] = []
    for i in order.tolist():
        if not math.isfinite(float(e[i])) or float(e[i] - e[order[0]]) > MAX_RELATIVE_ENERGY_KCAL_MOL:
            continue
        d = torch.remainder(x[i] - x[kept] + math.pi, TWO_PI) - math.pi if kept else None
        if d is None or bool((d.norm(dim=-1) > SAME_MINIMUM_RAD).all()):
            kept.append(i)
    means, energies = x[kept], e[kept]  # [Nb, K], [Nb]
    # Hessian by central differences of the gradient, all minima and directions in one batch
    shift = FD_STEP_RAD * torch.eye(K, dtype=torch.float64, device=energy.device)  # [K, K]
    probes = torch.cat([means[:, None] + shift, means[:, None] - shift], 1).reshape(-1, K)  # [Nb * 2K, K]
    _, g = e_and_grad(probes)
    g = g.reshape(len(kept), 2, K, K)  # [Nb, +/-, direction i, component j]
    hessian = (g[:, 0] - g[:, 1]) / (2 * FD_STEP_RAD)  # [Nb, K, K]
    hessian = 0.5 * (hessian + hessian.transpose(1, 2))
    eigval, eigvec = torch.linalg.eigh(hessian / kT)  # precision of the basin, 1 / rad^2
    is_minimum = eigval.min(-1).values > 0
    variances = 1.0 / eigval.clamp_min(1.0 / MAX_BASIN_VARIANCE_RAD2)  # [Nb, K]
    covariances = eigvec @ torch.diag_embed(variances) @ eigvec.transpose(1, 2)  # [Nb, K, K]
    keep = is_minimum if bool(is_minimum.any()) else torch.ones_like(is_minimum)
    means, energies, covariances, variances = means[keep], energies[keep], covariances[keep], variances[keep]
    log_mass = -energies / kT + 0.5 * K * math.log(TWO_PI) + 0.5 * variances.log().sum(-1)
    return StructureBasins(means.cpu(), covariances.cpu(), log_mass.cpu(), energies.cpu())


def cached_basins(
    energy: TorchTorsionalEnergy, entry: int, kT: float, seed: int, cache_dir: Path | str | None
) -> StructureBasins:
    """find_basins, read from cache_dir/basins-<key>.pt when present, else computed and stored there (no cache_dir:
    always computed)."""
    if cache_dir is None:
        return find_basins(energy, entry, kT, seed)
    structure = energy.entries[entry]
    search = [
        STARTS_PER_TORSION,
        DESCENT_STEPS,
        FD_STEP_RAD,
        SAME_MINIMUM_RAD,
        MAX_BASIN_VARIANCE_RAD2,
        MAX_RELATIVE_ENERGY_KCAL_MOL,
    ]
    key = hashlib.sha256(
        json.dumps([structure.smiles, energy.variant, repr(kT), seed, search]).encode()
        + structure.positions.astype("<f8").tobytes()
    ).hexdigest()[:24]
    path = Path(cache_dir) / f"basins-{key}.pt"
    if path.exists():
        return StructureBasins(**torch.load(path))
    basins = find_basins(energy, entry, kT, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save(asdict(basins), tmp)
    os.replace(tmp.name, path)  # atomic: trials that search the same structure at once both write whole files
    return basins


class BasinMixtureScore:
    """(entry_index [B], torsion_index [M], x [P, M], k [P]) -> grad log p_k [P, M] of the wrapped Laplace mixture.

    Basins of all structures are padded to [E, Nb_max, K_max] (absent basins: log mass -inf; absent torsion slots:
    unit variance, zero offset, so they add nothing to any responsibility or score)."""

    def __init__(
        self,
        energy: TorchTorsionalEnergy,
        kT: float,
        num_steps: int,
        max_windings: int = 2,
        cache_dir: Path | str | None = None,
    ):
        E, K = len(energy.num_torsions), energy.k_max
        self.basins = [cached_basins(energy, e, kT, e, cache_dir) for e in range(E)]
        nb = max(len(b.means) for b in self.basins)
        self.means = torch.zeros(E, nb, K, dtype=torch.float64)
        self.cov = torch.eye(K, dtype=torch.float64).repeat(E, nb, 1, 1)
        self.log_mass = torch.full((E, nb), -math.inf, dtype=torch.float64)
        self.slot_valid = energy.valid.cpu()  # [E, K]
        for e, b in enumerate(self.basins):
            k = b.means.shape[1]
            self.means[e, : len(b.means), :k] = b.means
            self.cov[e, : len(b.means), :k, :k] = b.covariances
            self.log_mass[e, : len(b.means)] = b.log_mass
        self.num_torsions = energy.num_torsions.cpu()
        self.k_max = K
        self.c = remaining_noise_variance(num_steps)  # [S]
        self.max_windings = max_windings
        self.device = energy.device

    def winding_range(self, c: float) -> int:
        """W: windings per torsion enough for a std of sqrt(c + 1) (the widest basin's), at most max_windings."""
        return min(self.max_windings, math.ceil(3 * math.sqrt(c + MAX_BASIN_VARIANCE_RAD2) / TWO_PI))

    def separable(self, c: float) -> bool:
        """Whether the sum over windings at c is taken torsion by torsion (the whole cube would exceed
        MAX_EXACT_TERMS_PER_ROW terms per row)."""
        return self.log_mass.shape[1] * (2 * self.winding_range(c) + 1) ** self.k_max > MAX_EXACT_TERMS_PER_ROW

    def windings(self, c: float) -> Tensor:
        """Integer shifts n in {-W..W}^K_max times 2 pi, [(2W+1)^K_max, K_max] (the whole cube)."""
        w = self.winding_range(c)
        axis = torch.arange(-w, w + 1, dtype=torch.float64)
        return torch.cartesian_prod(*[axis] * self.k_max).reshape(-1, self.k_max) * TWO_PI  # [Nw, K]

    def score_dense(self, entry_index: Tensor, x: Tensor, k: int) -> Tensor:
        """x [R, K_max] angles of structures entry_index [R] at step k -> grad log p_k [R, K_max], in chunks of rows
        whose temporaries hold at most SCORE_CHUNK_ELEMENTS elements each."""
        c = float(self.c[k])
        nb, K, w = self.log_mass.shape[1], self.k_max, self.winding_range(c)
        separable = self.separable(c)
        windings = 2 * w + 1 if separable else (2 * w + 1) ** K  # temporaries [Nb, K, 2W+1] or [Nb, Nw, K]
        rows = max(1, SCORE_CHUNK_ELEMENTS // (nb * K * max(windings, K)))  # and the precisions [Nb, K, K]
        if len(x) <= rows:
            return self._score_rows(entry_index, x, c, separable)
        parts = [
            self._score_rows(entry_index[i : i + rows], x[i : i + rows], c, separable) for i in range(0, len(x), rows)
        ]
        return torch.cat(parts)

    def _score_rows(self, entry_index: Tensor, x: Tensor, c: float, separable: bool) -> Tensor:
        """score_dense for one chunk of rows."""
        entries, row_entry = torch.unique(entry_index, return_inverse=True)  # [U], [R]
        cov = self.cov[entries] + c * torch.diag_embed(self.slot_valid[entries].double())[:, None]  # [U, Nb, K, K]
        precision = torch.linalg.inv(cov)[row_entry]  # [R, Nb, K, K]
        logdet = torch.linalg.slogdet(cov)[1][row_entry]  # [R, Nb]
        valid = self.slot_valid[entry_index]  # [R, K]
        log_mass = self.log_mass[entry_index]  # [R, Nb]
        d = torch.remainder(x[:, None] - self.means[entry_index] + math.pi, TWO_PI) - math.pi  # [R, Nb, K]
        if separable:
            variance = torch.diagonal(cov, dim1=-2, dim2=-1)[row_entry]  # [R, Nb, K]
            return self._separable_score(d, precision, logdet, variance, log_mass, valid, self.winding_range(c))
        n = self.windings(c) * valid[:, None, None].double()  # [R, 1, Nw, K] absent slots never wind
        d = (d[:, :, None] + n) * valid[:, None, None].double()  # [R, Nb, Nw, K]
        pd = torch.einsum("rbij,rbwj->rbwi", precision, d)  # [R, Nb, Nw, K]
        log_w = log_mass[:, :, None] - 0.5 * logdet[:, :, None] - 0.5 * (d * pd).sum(-1)
        gamma = torch.softmax(log_w.reshape(len(x), -1), dim=1).reshape(log_w.shape)  # [R, Nb, Nw]
        return -(gamma[..., None] * pd).sum((1, 2)) * valid.double()  # [R, K]

    @staticmethod
    def _separable_score(
        d: Tensor, precision: Tensor, logdet: Tensor, variance: Tensor, log_mass: Tensor, valid: Tensor, w: int
    ) -> Tensor:
        """The score with the windings summed torsion by torsion (module docstring). d [R, Nb, K] nearest images,
        precision [R, Nb, K, K] C^-1, logdet [R, Nb], variance [R, Nb, K] the diagonal of C, log_mass [R, Nb],
        valid [R, K], w windings each way."""
        mask = valid[:, None].double()  # [R, 1, K]
        d = d * mask  # [R, Nb, K] absent slots: zero offset
        n = torch.arange(-w, w + 1, dtype=torch.float64) * TWO_PI  # [2W+1]
        z = d[..., None] + n * mask[..., None]  # [R, Nb, K, 2W+1] absent slots never wind
        log_t = -0.5 * z.pow(2) / variance[..., None]  # [R, Nb, K, 2W+1] each torsion's windings alone
        factor = (torch.logsumexp(log_t, -1) + 0.5 * d.pow(2) / variance) * mask  # [R, Nb, K] log of its factor
        d_mean = (torch.softmax(log_t, -1) * z).sum(-1)  # [R, Nb, K] d~
        log_w = log_mass - 0.5 * logdet - 0.5 * torch.einsum("rbi,rbij,rbj->rb", d, precision, d) + factor.sum(-1)
        gamma = torch.softmax(log_w, dim=1)  # [R, Nb]
        pd = torch.einsum("rbij,rbj->rbi", precision, d_mean)  # [R, Nb, K]
        return -(gamma[..., None] * pd).sum(1) * valid.double()  # [R, K]

    def __call__(self, entry_index: Tensor, torsion_index: Tensor, x: Tensor, k: Tensor) -> Tensor:
        e, t = entry_index.cpu().long(), torsion_index.cpu().long()  # [B], [M]
        P, M = x.shape
        B = e.numel()
        k_b = self.num_torsions[e]  # [B]
        slot = torch.arange(M) - (torch.cumsum(k_b, 0) - k_b)[t]  # [M]
        dense = torch.zeros(P, B, self.k_max, dtype=torch.float64)
        dense[:, t, slot] = x.detach().cpu().double()
        out = torch.empty_like(dense)
        for step in k.cpu().unique().tolist():  # one c_k per call of score_dense
            rows = (k.cpu() == step).nonzero().squeeze(1)
            out[rows] = self.score_dense(e.repeat(len(rows)), dense[rows].reshape(-1, self.k_max), step).reshape(
                len(rows), B, self.k_max
            )
        return out[:, t, slot].to(x.device, x.dtype)  # [P, M]
