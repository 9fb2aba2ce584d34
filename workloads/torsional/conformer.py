"""Set and measure the torsion angles of a batch of conformers.

Dihedral of (a, b, c, d), with b1 = x_b - x_a, b2 = x_c - x_b, b3 = x_d - x_c:
    phi = atan2( |b2| b1 . (b2 x b3),  (b1 x b2) . (b2 x b3) )          in (-pi, pi]
(IUPAC sign, the same as RDKit's rdMolTransforms.GetDihedralRad).

Setting phi_k to a target: rotate the atoms on the c-side of bond b-c (the part of the molecule
that contains c once the bond is cut) about the unit axis u = (x_c - x_b) / |x_c - x_b| by
delta = target - phi_k, with Rodrigues' formula for each moving atom y = x - x_b:
    R(delta) y = y cos(delta) + (u x y) sin(delta) + u (u . y)(1 - cos(delta)).
A rigid rotation about a bond preserves every bond length and angle. Rotating about bond k' moves
the four atoms of every other torsion k rigidly (or not at all: an atom of bond k' is on the axis),
so phi_k is unchanged by it: every delta_k = target_k - phi_k is measured once, on the input, and
the rotations are applied one after the other, each as the matrix R = cos I + sin [u]x + (1 - cos) u u^T.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .molecule import Molecule


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """u x v over the last axis (np.cross costs ~10x more on the small arrays used here)."""
    u0, u1, u2 = u[..., 0], u[..., 1], u[..., 2]
    v0, v1, v2 = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([u1 * v2 - u2 * v1, u2 * v0 - u0 * v2, u0 * v1 - u1 * v0], axis=-1)


def dihedral_angles(positions: np.ndarray, torsions: np.ndarray) -> np.ndarray:
    """[B, N, 3] positions, [K, 4] atom quadruples -> [B, K] dihedral angles in (-pi, pi]."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 2:
        positions = positions[None]
    torsions = np.asarray(torsions, dtype=np.int64).reshape(-1, 4)
    xa, xb, xc, xd = (positions[:, torsions[:, i]] for i in range(4))  # each [B, K, 3]
    b1, b2, b3 = xb - xa, xc - xb, xd - xc  # [B, K, 3]
    n1, n2 = _cross(b1, b2), _cross(b2, b3)  # [B, K, 3]
    y = np.sqrt((b2 * b2).sum(-1)) * (b1 * n2).sum(-1)  # [B, K]
    x = (n1 * n2).sum(-1)  # [B, K]
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


_LEVI_CIVITA = -np.array(
    [[[0, 0, 0], [0, 0, 1], [0, -1, 0]], [[0, 0, -1], [0, 0, 0], [1, 0, 0]], [[0, 1, 0], [-1, 0, 0], [0, 0, 0]]],
    dtype=np.float64,
).reshape(3, 9)
"""[3, 9]: (u @ _LEVI_CIVITA).reshape(3, 3) = [u]x, the matrix of y -> u x y."""


def rotate_about_bond(positions: np.ndarray, b: int, c: int, atoms: np.ndarray, delta: np.ndarray) -> None:
    """In place: rotate positions[:, atoms] by delta [B] radians about the axis x_b -> x_c."""
    origin = positions[:, b]  # [B, 3]
    u = positions[:, c] - origin
    u /= np.sqrt((u * u).sum(-1, keepdims=True))  # [B, 3]
    cos, sin = np.cos(delta)[:, None, None], np.sin(delta)[:, None, None]  # [B, 1, 1]
    cross = (u @ _LEVI_CIVITA).reshape(-1, 3, 3)  # [B, 3, 3]
    rotation = cos * np.eye(3) + sin * cross + (1.0 - cos) * (u[:, :, None] * u[:, None, :])  # [B, 3, 3]
    y = positions[:, atoms] - origin[:, None]  # [B, M, 3]
    positions[:, atoms] = y @ rotation.transpose(0, 2, 1) + origin[:, None]  # [B, M, 3]


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
    delta = angles - dihedral_angles(positions, molecule.torsions)  # [B, K]; no rotation changes another's phi
    out = positions.copy()  # [B, N, 3]
    for k, ((_, b, c, _), atoms) in enumerate(zip(molecule.torsions.tolist(), moving_atoms(molecule))):
        rotate_about_bond(out, b, c, atoms, delta[:, k])
    return out
