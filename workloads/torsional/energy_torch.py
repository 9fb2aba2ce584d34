"""MMFF94 / MMFF94s energies of conformers made by setting torsions, in PyTorch: batched, with exact gradients.

The policy's score drift (policy.py) needs dE/dx at every step of every trajectory, on the CPU or a GPU, for a
batch that mixes (molecule, local structure) entries L. Conformer of L with torsions x [K] (conformer.py, exactly):
delta_k = x_k - phi_k(x_L), then for k = 0..K-1 the atoms on the c-side of torsion k's bond b-c are rotated by
delta_k about u_k = (x_c - x_b) / |x_c - x_b| (current positions), with y = x_i - x_b:
    R(delta) y = y cos delta + (u x y) sin delta + u (u . y)(1 - cos delta).
Setting torsions keeps every bond, angle, stretch-bend and out-of-plane term (mmff_openmm.py's torsional
subsystem), so
    E(x | L) = E_B(x) + c_L,      c_L = E_RDKit(x_L) - E_B(x_L)      (E is RDKit's whole MMFF energy)
    E_B = sum_t 1/2 (V1 (1 + cos phi_t) + V2 (1 - cos 2 phi_t) + V3 (1 + cos 3 phi_t))   torsion terms about the bonds
        + sum_p eps (1.07 R* / (r + 0.07 R*))^7 (1.12 R*^7 / (r^7 + 0.12 R*^7) - 2)     vdW    } pairs p = (i, j) in
        + sum_p qq / (r + 0.05)^n                                                       elec.  } different rigid parts
with the terms of mmff_openmm.torsional_terms (qq = 332.0716 q_i q_j / D x (0.75 if 1-4), n = 2 for the
distance-dependent dielectric, else 1; a pair with only one of the two terms has eps = 0 or qq = 0) and phi_t
the dihedral of conformer.dihedral_angles.

Gradient, exact and without autograd: a conformer is fixed up to a rigid motion (E is invariant under them) by
its torsions, and rotating the c-side of bond k about its final axis changes torsion k only, so dx_k moves the
final conformer's c-side atoms by u_k x (x_i - x_b) dx_k. A torsion term about bond k turns by exactly dx_k (in
either orientation); every other term's atoms move rigidly or lie on the axis. Hence, with m_k(i) = 1 for the
atoms on the c-side of bond k and F_i = sum_{pairs p of i and j} E_p'(r_p) (x_i - x_j) / r_p the pairs' dE/dx_i,
    dE/dx_k = sum_{t about bond k} dE_t/dphi_t + u_k . sum_i m_k(i) (x_i - x_b) x F_i       (a torque about bond k).
`energies` is differentiable (first order) through it.

Batching: each entry is a row of padded tables (atoms, torsion slots, torsion terms, pairs) gathered by entry
index, so the only Python loop is over the K_max torsion slots. A padded slot rotates nothing (delta = 0, no
moving atom); padded terms and pairs point at 4 dummy atoms at the end of each atom table (a non-degenerate
dihedral, a pair 1 A apart) with zero parameters, so they add exact zeros. float64 throughout. Positions are
[B, 3, N] (coordinates before atoms): every coordinate of every atom is then a contiguous [B, N] slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .conformer import dihedral_angles, moving_atoms
from .data import StructureEntry
from .energy_rdkit import RDKitEnergy
from .mmff_openmm import TorsionalTerms, torsional_terms

_DUMMY_POSITIONS = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
"""The 4 dummy atoms (a, b, c, d) ending every atom table: dihedral -45 degrees, |b - c| = 1 A."""
CPU_ROWS_PER_BLOCK = 384
"""On the CPU, rows are evaluated in blocks of this many, so that the [rows, 3, pairs] temporaries stay in cache
(2x faster than one block of 2560 rows); a GPU takes every row at once."""
CPU_PAIR_ELEMENTS_PER_BLOCK = CPU_ROWS_PER_BLOCK * 1024
"""On the CPU, fewer rows per block for molecules of more than 1,024 atom pairs, so that one [rows, 3, pairs]
temporary stays under 9 MB for any molecule (the reference molecules have a few hundred pairs)."""


def _cross(u: Tensor, v: Tensor) -> Tensor:
    """u x v over dim 1 (the coordinates of [B, 3, ...] tensors)."""
    u0, u1, u2 = u.unbind(1)
    v0, v1, v2 = v.unbind(1)
    return torch.stack([u1 * v2 - u2 * v1, u2 * v0 - u0 * v2, u0 * v1 - u1 * v0], dim=1)


def _pair_table(t: TorsionalTerms) -> tuple[np.ndarray, np.ndarray]:
    """Union of the vdW and electrostatic pairs: [P, 2] int64 and [P, 3] (R*, eps, qq), an absent term zero."""
    params: dict[tuple[int, int], list[float]] = {}
    for (i, j), r, eps in zip(t.vdw_pairs.tolist(), t.vdw_r.tolist(), t.vdw_eps.tolist()):
        params[(i, j)] = [r, eps, 0.0]
    for (i, j), qq in zip(t.ele_pairs.tolist(), t.ele_qq.tolist()):
        params.setdefault((i, j), [1.0, 0.0, 0.0])[2] = qq
    return np.array(list(params), dtype=np.int64).reshape(-1, 2), np.array(list(params.values())).reshape(-1, 3)


class _Energy(torch.autograd.Function):
    """E [B] of angles [B, K_max]; backward from the exact dE/dx computed with it."""

    @staticmethod
    def forward(ctx, angles: Tensor, model: TorchTorsionalEnergy, e: Tensor) -> Tensor:
        energy, grad = model._evaluate(e, angles, with_gradient=True)
        ctx.save_for_backward(grad)
        return energy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_energy: Tensor):
        (grad,) = ctx.saved_tensors
        return grad_energy[:, None] * grad, None, None


class TorchTorsionalEnergy:
    """E(x | L) in kcal/mol for torsions x of many (molecule, local structure) entries, batched, differentiable."""

    def __init__(self, entries: Sequence[StructureEntry], variant: str = "MMFF94s", device: str | torch.device = "cpu"):
        self.entries = list(entries)
        self.variant = variant
        self.device = torch.device(device)
        assert self.entries, "no entries"
        E = len(self.entries)
        terms = [torsional_terms(e.molecule.mol, variant, e.molecule.torsions[:, 1:3]) for e in self.entries]
        assert len({t.distance_dielectric for t in terms}) == 1, "one dielectric model for every entry"
        self.ele_power = 2 if terms[0].distance_dielectric else 1
        pair_tables = [_pair_table(t) for t in terms]
        n_max = max(e.molecule.num_atoms for e in self.entries) + 4
        dummy = np.arange(n_max - 4, n_max)  # [4] indices of the dummy atoms
        self.k_max = max(e.num_torsions for e in self.entries)
        t_max = max(1, max(len(t.torsions) for t in terms))
        p_max = max(1, max(len(p) for p, _ in pair_tables))
        rows_per_block = max(1, min(CPU_ROWS_PER_BLOCK, CPU_PAIR_ELEMENTS_PER_BLOCK // p_max))
        self.rows_per_block = rows_per_block if self.device.type == "cpu" else None

        positions = np.zeros((E, n_max, 3))
        positions[:, dummy] = _DUMMY_POSITIONS
        axis = np.broadcast_to(dummy[1:3], (E, self.k_max, 2)).copy()  # [E, K, 2] bond (b, c) of each slot
        moving = np.zeros((E, self.k_max, n_max), dtype=bool)  # the atoms that slot k rotates
        phi_local = np.zeros((E, self.k_max))
        quads = np.broadcast_to(dummy, (E, t_max, 4)).copy()
        v = np.zeros((E, t_max, 3))  # (V1, V2, V3)
        about = np.zeros((E, self.k_max, t_max))  # 1: term t is about the bond of slot k
        pairs = np.broadcast_to(dummy[1:3], (E, p_max, 2)).copy()
        r_star, eps, qq = np.ones((E, p_max)), np.zeros((E, p_max)), np.zeros((E, p_max))
        for n, (entry, t, (p, pp)) in enumerate(zip(self.entries, terms, pair_tables)):
            m, K, T, P = entry.molecule, entry.num_torsions, len(t.torsions), len(p)
            positions[n, : m.num_atoms] = entry.positions
            axis[n, :K] = m.torsions[:, 1:3]
            for k, atoms in enumerate(moving_atoms(m)):
                moving[n, k, atoms] = True
            phi_local[n, :K] = dihedral_angles(entry.positions, m.torsions)[0]
            quads[n, :T], v[n, :T] = t.torsions, t.torsion_v
            bonds = [frozenset(b) for b in m.torsions[:, 1:3].tolist()]
            for i, (_, j, k, _) in enumerate(t.torsions.tolist()):
                about[n, bonds.index(frozenset((j, k))), i] = 1.0
            pairs[n, :P] = p
            r_star[n, :P], eps[n, :P], qq[n, :P] = pp.T

        def tensor(a, dtype=torch.float64):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.device)

        self.positions = tensor(positions.transpose(0, 2, 1))  # [E, 3, N_max + 4] Angstrom
        self.num_torsions = tensor([e.num_torsions for e in self.entries], torch.long)  # [E]
        self.valid = torch.arange(self.k_max, device=self.device) < self.num_torsions[:, None]  # [E, K_max]
        self.axis = tensor(axis, torch.long)  # [E, K_max, 2]
        self.moving = tensor(moving, torch.bool)  # [E, K_max, N_max + 4]
        self.moving_float = self.moving.double()  # m_k(i)
        self.phi_local = tensor(phi_local)  # [E, K_max]
        self.quads = tensor(quads.transpose(0, 2, 1).reshape(E, -1), torch.long)  # [E, 4 T_max] (atom, term)
        self.v = tensor(v.transpose(0, 2, 1))  # [E, 3, T_max]
        self.about = tensor(about)  # [E, K_max, T_max]
        self.pairs = tensor(pairs.transpose(0, 2, 1).reshape(E, -1), torch.long)  # [E, 2 P_max] (end, pair)
        # [E, 6, P_max]: 0.07 R*, 1.07 R*, 0.12 R*^7, 1.12 R*^7, eps, qq
        r7 = r_star**7
        self.pair_params = tensor(np.stack([0.07 * r_star, 1.07 * r_star, 0.12 * r7, 1.12 * r7, eps, qq], 1))
        e_rdkit = [RDKitEnergy(e.molecule, e.positions, variant).energies(e.positions)[0] for e in self.entries]
        self.constant = torch.zeros(E, dtype=torch.float64, device=self.device)  # so that _evaluate gives E_B
        self.constant = tensor(e_rdkit) - self._evaluate(torch.arange(E, device=self.device), self.phi_local)[0]  # c_L

    def conformers(self, entry_index: Tensor, angles: Tensor) -> Tensor:
        """[B] entries, [B, K_max] radians -> [B, 3, N_max + 4] float64 positions (set_torsions's, padded)."""
        e = entry_index.to(self.device, torch.long)
        angles = angles.detach().to(self.device, torch.float64)
        B = e.numel()
        assert angles.shape == (B, self.k_max), (tuple(angles.shape), B, self.k_max)
        delta = torch.where(self.valid[e], angles - self.phi_local[e], 0.0)  # [B, K]
        cos, sin = torch.cos(delta), torch.sin(delta)
        axis, moving = self.axis[e], self.moving[e]  # [B, K, 2], [B, K, N]
        x = self.positions[e]  # [B, 3, N]
        for k in range(self.k_max):
            ends = torch.gather(x, 2, axis[:, None, k].expand(B, 3, 2))  # [B, 3, 2] x_b, x_c
            origin = ends[:, :, :1]  # [B, 3, 1]
            u = ends[:, :, 1] - ends[:, :, 0]
            u = u / torch.sqrt((u * u).sum(1, keepdim=True))  # [B, 3]
            c, s = cos[:, k, None], sin[:, k, None]  # [B, 1]
            y0, y1, y2 = (x - origin).unbind(1)  # [B, N] each
            u0, u1, u2 = u[:, 0, None], u[:, 1, None], u[:, 2, None]  # [B, 1] each
            u_y = (u0 * y0 + u1 * y1 + u2 * y2) * (1.0 - c)  # [B, N]
            rotated = (
                torch.stack(
                    [
                        y0 * c + (u1 * y2 - u2 * y1) * s + u0 * u_y,
                        y1 * c + (u2 * y0 - u0 * y2) * s + u1 * u_y,
                        y2 * c + (u0 * y1 - u1 * y0) * s + u2 * u_y,
                    ],
                    1,
                )
                + origin
            )  # [B, 3, N]
            x = torch.where(moving[:, None, k], rotated, x)
        return x

    def _evaluate(self, e: Tensor, angles: Tensor, with_gradient: bool = False) -> tuple[Tensor, Tensor | None]:
        """E [B] float64 and, with_gradient, dE/dx [B, K_max] (0 in padded slots) of entries e [B] at angles."""
        block = self.rows_per_block or e.numel()
        if e.numel() <= block:
            return self._evaluate_block(e, angles, with_gradient)
        parts = [
            self._evaluate_block(e[i : i + block], angles[i : i + block], with_gradient)
            for i in range(0, e.numel(), block)
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]) if with_gradient else None

    def _evaluate_block(self, e: Tensor, angles: Tensor, with_gradient: bool) -> tuple[Tensor, Tensor | None]:
        x = self.conformers(e, angles)  # [B, 3, N]
        B = e.numel()
        p = torch.gather(x, 2, self.quads[e][:, None].expand(B, 3, -1)).view(B, 3, 4, -1)  # [B, 3, 4, T]
        b1, b2, b3 = p[:, :, 1] - p[:, :, 0], p[:, :, 2] - p[:, :, 1], p[:, :, 3] - p[:, :, 2]  # [B, 3, T]
        n1, n2 = _cross(b1, b2), _cross(b2, b3)
        phi = torch.atan2(torch.sqrt((b2 * b2).sum(1)) * (b1 * n2).sum(1), (n1 * n2).sum(1))  # [B, T]
        v1, v2, v3 = self.v[e].unbind(1)  # [B, T] each
        e_torsion = 0.5 * (v1 * (1 + torch.cos(phi)) + v2 * (1 - torch.cos(2 * phi)) + v3 * (1 + torch.cos(3 * phi)))

        P = self.pairs.shape[1] // 2
        ends = torch.gather(x, 2, self.pairs[e][:, None].expand(B, 3, -1)).view(B, 3, 2, P)  # [B, 3, 2, P]
        xi = ends[:, :, 0]
        d = xi - ends[:, :, 1]  # [B, 3, P] x_i - x_j
        r = torch.sqrt((d * d).sum(1))  # [B, P]
        r007, r107, r7_012, r7_112, eps, qq = self.pair_params[e].unbind(1)  # [B, P] each
        s = r + r007
        a = r107 / s
        a2 = a * a
        a7 = a2 * a2 * a2 * a
        r2 = r * r
        r6 = r2 * r2 * r2
        t = r6 * r + r7_012
        q = r7_112 / t
        e_vdw = eps * a7 * (q - 2.0)
        s_ele = r + 0.05
        e_ele = qq / (s_ele * s_ele if self.ele_power == 2 else s_ele)
        energy = e_torsion.sum(1) + (e_vdw + e_ele).sum(1) + self.constant[e]
        if not with_gradient:
            return energy, None

        de_dphi = 0.5 * (-v1 * torch.sin(phi) + 2 * v2 * torch.sin(2 * phi) - 3 * v3 * torch.sin(3 * phi))  # [B, T]
        grad = torch.bmm(self.about[e], de_dphi[:, :, None])[:, :, 0]  # [B, K]
        de_dr = -7.0 * e_vdw / s - 7.0 * eps * a7 * q * r6 / t - self.ele_power * e_ele / s_ele  # [B, P]
        g = d * (de_dr / r)[:, None]  # [B, 3, P] dE/dx_i of each pair (dE/dx_j = -g)
        pairs = self.pairs[e][:, None]  # [B, 1, 2P]
        forces = torch.zeros_like(x).scatter_add_(2, pairs[..., :P].expand(B, 3, P), g) - torch.zeros_like(
            x
        ).scatter_add_(2, pairs[..., P:].expand(B, 3, P), g)  # [B, 3, N] dE/dx of pairs
        moving = self.moving_float[e]  # [B, K, N]
        moments = torch.bmm(moving, torch.cat([_cross(x, forces), forces], 1).transpose(1, 2))  # [B, K, 6]
        axes = torch.gather(x, 2, self.axis[e].view(B, 1, -1).expand(B, 3, -1)).view(B, 3, -1, 2)  # [B, 3, K, 2]
        xb = axes[..., 0]  # [B, 3, K]
        u = axes[..., 1] - xb
        u = u / torch.sqrt((u * u).sum(1, keepdim=True))
        # sum_i m_k(i) (x_i - x_b) x F_i
        torque = moments[:, :, :3].transpose(1, 2) - _cross(xb, moments[:, :, 3:].transpose(1, 2))  # [B, 3, K]
        return energy, grad + (u * torque).sum(1)

    def energies(self, entry_index: Tensor, angles: Tensor) -> Tensor:
        """entry_index [B] long (index into `entries`), angles [B, K_max] radians (columns >= K_b ignored)
        -> [B] float64 kcal/mol on `device`, differentiable (first order) in angles."""
        e = entry_index.to(self.device, torch.long)
        angles = angles.to(self.device, torch.float64)
        if torch.is_grad_enabled() and angles.requires_grad:
            return _Energy.apply(angles, self, e)
        return self._evaluate(e, angles)[0]

    def energies_and_gradients(self, entry_index: Tensor, angles: Tensor) -> tuple[Tensor, Tensor]:
        """E [B] float64 kcal/mol and dE/dangles [B, K_max] (0 in columns >= K_b), no graph attached, for entries
        entry_index [B] at angles [B, K_max] radians."""
        energy, grad = self._evaluate(
            entry_index.to(self.device, torch.long), angles.detach().to(self.device, torch.float64), with_gradient=True
        )
        return energy, grad

    def gradient(self, entry_index: Tensor, torsion_index: Tensor, x: Tensor) -> Tensor:
        """dE/dx [P, M] (x's dtype and device, no graph attached) for x [P, M]: P rows of the same B trajectories,
        whose torsions are flattened: torsion_index [M] long names each torsion's trajectory b (0..B-1), the
        torsions of a trajectory are contiguous and in molecule.torsions order; trajectory b is entry
        entry_index[b]. The layout is checked when torsion_index is on the CPU (on a GPU the check would wait)."""
        e = entry_index.to(self.device, torch.long)  # [B]
        P, M = x.shape
        B = e.numel()
        k_b = self.num_torsions[e]  # [B]
        if torsion_index.device.type == "cpu":
            counts = torch.bincount(torsion_index, minlength=B)
            assert counts.numel() == B and bool((counts == k_b.cpu()).all()), "torsion_index does not match entries"
        t = torsion_index.to(self.device, torch.long)  # [M]
        slot = torch.arange(M, device=self.device) - (torch.cumsum(k_b, 0) - k_b)[t]  # [M] k of torsion in its entry
        angles = torch.zeros(P, B, self.k_max, dtype=torch.float64, device=self.device)
        angles[:, t, slot] = x.detach().to(self.device, torch.float64)
        _, grad = self._evaluate(e.repeat(P), angles.view(P * B, self.k_max), with_gradient=True)  # row p * B + b
        return grad.view(P, B, self.k_max)[:, t, slot].to(x.device, x.dtype)
