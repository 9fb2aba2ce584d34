"""Set and measure the torsion angles of a batch of conformers.

Dihedral of (a, b, c, d), with b1 = x_b - x_a, b2 = x_c - x_b, b3 = x_d - x_c:
    phi = atan2( |b2| b1 . (b2 x b3),  (b1 x b2) . (b2 x b3) )          in (-pi, pi]
(IUPAC sign, the same as RDKit's rdMolTransforms.GetDihedralRad).

Setting phi_k to a target: rotate the atoms on the c-side of bond b-c (the part of the molecule
that contains c once the bond is cut) about the unit axis u = (x_c - x_b) / |x_c - x_b| by
delta = target - phi_k, with Rodrigues' formula for each moving atom y = x - x_b:
    R(delta) y = y cos(delta) + (u x y) sin(delta) + u (u . y)(1 - cos(delta)).
A rigid rotation about a bond preserves every bond length and angle. Torsions are set one after
the other: rotating about bond k' moves the four atoms of torsion k rigidly (or not at all), so
earlier torsions keep their values.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .molecule import Molecule


def dihedral_angles(positions: np.ndarray, torsions: np.ndarray) -> np.ndarray:
    """[B, N, 3] positions, [K, 4] atom quadruples -> [B, K] dihedral angles in (-pi, pi]."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 2:
        positions = positions[None]
    torsions = np.asarray(torsions, dtype=np.int64).reshape(-1, 4)
    xa, xb, xc, xd = (positions[:, torsions[:, i]] for i in range(4))  # each [B, K, 3]
    b1, b2, b3 = xb - xa, xc - xb, xd - xc  # [B, K, 3]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)  # [B, K, 3]
    y = np.linalg.norm(b2, axis=-1) * np.einsum("bki,bki->bk", b1, n2)  # [B, K]
    x = np.einsum("bki,bki->bk", n1, n2)  # [B, K]
    return np.arctan2(y, x)


@lru_cache(maxsize=1024)
def moving_atoms(molecule: Molecule) -> tuple[np.ndarray, ...]:
    """Per torsion k, the int64 indices of the atoms on the c-side of bond b-c (c included)."""
    neighbours = [[nb.GetIdx() for nb in atom.GetNeighbors()] for atom in molecule.mol.GetAtoms()]
    sides = []
    for _, b, c, _ in molecule.torsions.tolist():
        seen, stack = {c}, [c]
        while stack:
            i = stack.pop()
            for j in neighbours[i]:
                if j not in seen and not (i == c and j == b):
                    seen.add(j)
                    stack.append(j)
        assert b not in seen, f"bond {b}-{c} of {molecule.smiles} is in a ring"
        sides.append(np.array(sorted(seen), dtype=np.int64))
    return tuple(sides)


def rotate_about_bond(positions: np.ndarray, b: int, c: int, atoms: np.ndarray, delta: np.ndarray) -> None:
    """In place: rotate positions[:, atoms] by delta [B] radians about the axis x_b -> x_c."""
    origin = positions[:, b]  # [B, 3]
    u = positions[:, c] - origin
    u /= np.linalg.norm(u, axis=-1, keepdims=True)  # [B, 3]
    y = positions[:, atoms] - origin[:, None]  # [B, M, 3]
    cos, sin = np.cos(delta)[:, None, None], np.sin(delta)[:, None, None]  # [B, 1, 1]
    u_ = u[:, None, :]  # [B, 1, 3]
    y_rot = y * cos + np.cross(u_, y) * sin + u_ * np.sum(u_ * y, axis=-1, keepdims=True) * (1.0 - cos)
    positions[:, atoms] = y_rot + origin[:, None]  # [B, M, 3]


def set_torsions(positions: np.ndarray, molecule: Molecule, angles: np.ndarray) -> np.ndarray:
    """Conformers with the molecule's torsions set to `angles`.

    positions: [N, 3] (one local structure, broadcast over the batch) or [B, N, 3], Angstrom.
    angles:    [B, K] absolute dihedral angles in radians (any real value; taken modulo 2 pi).
    returns:   [B, N, 3] float64, a new array.
    """
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim == 1:
        angles = angles[None]
    B, K = angles.shape
    assert K == molecule.num_torsions, (K, molecule.num_torsions)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 2:
        positions = np.broadcast_to(positions, (B, *positions.shape))
    assert positions.shape == (B, molecule.num_atoms, 3), positions.shape
    out = positions.copy()  # [B, N, 3]
    for k, ((a, b, c, d), atoms) in enumerate(zip(molecule.torsions.tolist(), moving_atoms(molecule))):
        phi = dihedral_angles(out, np.array([[a, b, c, d]]))[:, 0]  # [B]
        rotate_about_bond(out, b, c, atoms, angles[:, k] - phi)
    return out
