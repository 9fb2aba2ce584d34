"""Plain-PyTorch graph of one (molecule, local structure) for the Torsional-GFN policy, and batching.

A local structure fixes every bond length and bond angle; the torsions are then set by the sampler. So the
graph carries only what the torsions cannot change:
    atoms      a_i   [N, F_a]  element one-hot (H C N O F P S Cl Br I, other), degree, formal charge,
                               aromatic, hybridization, number of Hs, in ring
    bonds      (i, j) both directions, e_ij [E, F_b]  bond type, conjugated, in ring, is a torsion's
                               central bond, length d_ij = |x_i - x_j| (raw and as Gaussian RBFs)
    angles     1-3 pairs (i, k) of every bond angle i-j-k, both directions, g_ik [A, F_g]
                               cos(theta_ijk), theta_ijk / pi, 1-3 distance d_ik (raw and RBFs)
    torsions   (a, b, c, d) [K, 4]  rotatable dihedrals; the sampler's state is their angles
    positions  [N, 3] Angstrom, the local structure (its own torsion values are not used as features)

`collate` concatenates graphs into one (atoms stacked, indices offset), with `atom_graph_index` [N] and
`torsion_graph_index` [K] naming each atom's / torsion's graph, so one batch mixes molecules and local
structures of different N and K. A single graph is a batch of one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from rdkit import Chem
from torch import Tensor

ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
HYBRIDIZATIONS = (
    Chem.HybridizationType.SP,
    Chem.HybridizationType.SP2,
    Chem.HybridizationType.SP3,
    Chem.HybridizationType.SP3D,
    Chem.HybridizationType.SP3D2,
)
BOND_TYPES = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC)
MAX_DEGREE = 5
MAX_HS = 3
BOND_RBF = np.linspace(0.9, 2.1, 8)
"""Gaussian RBF centres (Angstrom) of bond lengths, width BOND_RBF_WIDTH."""
BOND_RBF_WIDTH = 0.15
ANGLE_RBF = np.linspace(1.4, 3.4, 8)
"""Gaussian RBF centres (Angstrom) of 1-3 distances, width ANGLE_RBF_WIDTH."""
ANGLE_RBF_WIDTH = 0.25

ATOM_DIM = len(ELEMENTS) + 1 + MAX_DEGREE + 1 + 3 + 1 + len(HYBRIDIZATIONS) + 1 + MAX_HS + 1 + 1  # 32
BOND_DIM = len(BOND_TYPES) + 3 + 1 + len(BOND_RBF)  # 16
ANGLE_DIM = 3 + len(ANGLE_RBF)  # 11


@dataclass
class MolecularGraph:
    atom_features: Tensor
    """[N, F_a] float."""
    bond_index: Tensor
    """[2, E] long (source, target), both directions of every bond."""
    bond_features: Tensor
    """[E, F_b] float."""
    angle_index: Tensor
    """[2, A] long 1-3 pairs (i, k) of the bond angles i-j-k, both directions."""
    angle_features: Tensor
    """[A, F_g] float."""
    torsions: Tensor
    """[K, 4] long atom quadruples (a, b, c, d)."""
    positions: Tensor
    """[N, 3] float Angstrom, the local structure."""
    atom_graph_index: Tensor
    """[N] long graph of each atom."""
    torsion_graph_index: Tensor
    """[K] long graph of each torsion."""
    num_graphs: int = 1

    @property
    def num_atoms(self) -> int:
        return self.atom_features.shape[0]

    @property
    def num_torsions(self) -> int:
        return self.torsions.shape[0]

    def to(self, device: torch.device | str) -> MolecularGraph:
        return MolecularGraph(
            **{
                f.name: (v.to(device) if isinstance(v, Tensor) else v)
                for f in fields(self)
                for v in [getattr(self, f.name)]
            }
        )


def _one_hot(i: int, n: int) -> list[float]:
    """One-hot of length n + 1; indices outside [0, n) go to the last ('other') slot."""
    v = [0.0] * (n + 1)
    v[i if 0 <= i < n else n] = 1.0
    return v


def _rbf(d: np.ndarray, centres: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-(((d[:, None] - centres[None]) / width) ** 2))  # [E, C]


def atom_features(mol: Chem.Mol) -> np.ndarray:
    """[N, ATOM_DIM] float32 (see module docstring)."""
    rows = []
    for atom in mol.GetAtoms():
        sym = atom.GetSymbol()
        hyb = atom.GetHybridization()
        rows.append(
            _one_hot(ELEMENTS.index(sym) if sym in ELEMENTS else -1, len(ELEMENTS))
            + _one_hot(min(atom.GetDegree(), MAX_DEGREE), MAX_DEGREE)
            + _one_hot(max(-1, min(atom.GetFormalCharge(), 1)) + 1, 3)[:3]
            + [float(atom.GetIsAromatic())]
            + _one_hot(HYBRIDIZATIONS.index(hyb) if hyb in HYBRIDIZATIONS else -1, len(HYBRIDIZATIONS))
            + _one_hot(min(atom.GetTotalNumHs(), MAX_HS), MAX_HS)
            + [float(atom.IsInRing())]
        )
    return np.asarray(rows, dtype=np.float32).reshape(-1, ATOM_DIM)


def graph_from_molecule(mol: Chem.Mol, positions, torsions) -> MolecularGraph:
    """One (molecule, local structure): mol with explicit H, positions [N, 3] Angstrom, torsions [K, 4]."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)  # [N, 3]
    assert pos.shape[0] == mol.GetNumAtoms(), (pos.shape, mol.GetNumAtoms())
    quads = np.asarray(torsions, dtype=np.int64).reshape(-1, 4)  # [K, 4]
    central = {frozenset((int(b), int(c))) for _, b, c, _ in quads}

    # bonds, both directions
    src, dst, bond_rows = [], [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        bt = bond.GetBondType()
        row = _one_hot(BOND_TYPES.index(bt) if bt in BOND_TYPES else -1, len(BOND_TYPES))[: len(BOND_TYPES)] + [
            float(bond.GetIsConjugated()),
            float(bond.IsInRing()),
            float(frozenset((i, j)) in central),
        ]
        src += [i, j]
        dst += [j, i]
        bond_rows += [row, row]
    bond_index = np.asarray([src, dst], dtype=np.int64).reshape(2, -1)  # [2, E]
    length = np.linalg.norm(pos[bond_index[0]] - pos[bond_index[1]], axis=-1)  # [E]
    bond_feats = np.concatenate(
        [
            np.asarray(bond_rows, dtype=np.float64).reshape(-1, BOND_DIM - 1 - len(BOND_RBF)),
            (length - 1.4)[:, None],
            _rbf(length, BOND_RBF, BOND_RBF_WIDTH),
        ],
        axis=1,
    )  # [E, F_b]

    # bond angles i-j-k as 1-3 pairs, both directions
    neighbours = [[nb.GetIdx() for nb in atom.GetNeighbors()] for atom in mol.GetAtoms()]
    triples = [(i, j, k) for j, nbs in enumerate(neighbours) for i in nbs for k in nbs if i != k]  # both orders
    tri = np.asarray(triples, dtype=np.int64).reshape(-1, 3)  # [A, 3]
    u, v = pos[tri[:, 0]] - pos[tri[:, 1]], pos[tri[:, 2]] - pos[tri[:, 1]]  # [A, 3]
    cos = np.clip((u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1)), -1.0, 1.0)  # [A]
    d13 = np.linalg.norm(pos[tri[:, 0]] - pos[tri[:, 2]], axis=-1)  # [A]
    angle_feats = np.concatenate(
        [cos[:, None], np.arccos(cos)[:, None] / np.pi, (d13 - 2.4)[:, None], _rbf(d13, ANGLE_RBF, ANGLE_RBF_WIDTH)],
        axis=1,
    )  # [A, F_g]

    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)
    i64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)
    return MolecularGraph(
        atom_features=f32(atom_features(mol)),
        bond_index=i64(bond_index),
        bond_features=f32(bond_feats),
        angle_index=i64(tri[:, [0, 2]].T.reshape(2, -1)),
        angle_features=f32(angle_feats),
        torsions=i64(quads),
        positions=f32(pos),
        atom_graph_index=torch.zeros(pos.shape[0], dtype=torch.long),
        torsion_graph_index=torch.zeros(quads.shape[0], dtype=torch.long),
        num_graphs=1,
    )


def collate(graphs: list[MolecularGraph]) -> MolecularGraph:
    """Concatenate graphs (each possibly a batch itself) into one batch; atom indices and graph indices offset."""
    atom_offsets = np.cumsum([0] + [g.num_atoms for g in graphs])[:-1]
    graph_offsets = np.cumsum([0] + [g.num_graphs for g in graphs])[:-1]
    cat = lambda name: torch.cat([getattr(g, name) for g in graphs])
    return MolecularGraph(
        atom_features=cat("atom_features"),
        bond_index=torch.cat([g.bond_index + int(o) for g, o in zip(graphs, atom_offsets)], dim=1),
        bond_features=cat("bond_features"),
        angle_index=torch.cat([g.angle_index + int(o) for g, o in zip(graphs, atom_offsets)], dim=1),
        angle_features=cat("angle_features"),
        torsions=torch.cat([g.torsions + int(o) for g, o in zip(graphs, atom_offsets)]),
        positions=cat("positions"),
        atom_graph_index=torch.cat([g.atom_graph_index + int(o) for g, o in zip(graphs, graph_offsets)]),
        torsion_graph_index=torch.cat([g.torsion_graph_index + int(o) for g, o in zip(graphs, graph_offsets)]),
        num_graphs=int(sum(g.num_graphs for g in graphs)),
    )
