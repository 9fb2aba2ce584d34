"""MMFF94 / MMFF94s energies with RDKit: one force field per (molecule, local structure), reused.

RDKit's MMFF force field is built once from a copy of the molecule holding the local structure;
each conformer's energy is then `ff.CalcEnergy(x)` with x the flat [3N] coordinates in Angstrom
(kcal/mol). Building a force field fixes only its term list (atom types, parameters and the
nonbonded pairs within 100 A), never the coordinates, so one force field serves every conformer
of the molecule. The reference code instead rebuilt a molecule and a force field per conformer:
`reference_energy` is that way, kept for benchmarks and tests.
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

from .conformer import set_torsions
from .molecule import Molecule


def molecule_with_positions(molecule: Molecule, positions: np.ndarray) -> Chem.Mol:
    """A copy of `molecule.mol` whose only conformer has `positions` [N, 3] (Angstrom)."""
    mol = Chem.Mol(molecule.mol)
    conf = mol.GetConformer()
    for i, xyz in enumerate(np.asarray(positions, dtype=np.float64).tolist()):
        conf.SetAtomPosition(i, xyz)
    return mol


def mmff_force_field(mol: Chem.Mol, variant: str = "MMFF94s"):
    props = AllChem.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
    assert props is not None, f"no MMFF parameters for {Chem.MolToSmiles(mol)}"
    return AllChem.MMFFGetMoleculeForceField(mol, props)


class RDKitEnergy:
    """E(x) in kcal/mol for conformers x of one molecule, from one reused RDKit MMFF force field."""

    def __init__(self, molecule: Molecule, positions_local: np.ndarray | None = None, variant: str = "MMFF94s"):
        self.molecule = molecule
        self.variant = variant
        self.positions_local = molecule.positions() if positions_local is None else np.asarray(positions_local)
        self.mol = molecule_with_positions(molecule, self.positions_local)  # the force field points into it
        self.ff = mmff_force_field(self.mol, variant)

    def energies(self, positions: np.ndarray) -> np.ndarray:
        """[B, N, 3] (or [N, 3]) Angstrom -> [B] float64 kcal/mol; non-finite values returned as-is."""
        positions = np.asarray(positions, dtype=np.float64)
        if positions.ndim == 2:
            positions = positions[None]
        flat = positions.reshape(len(positions), -1)  # [B, 3N]
        return np.array([self.ff.CalcEnergy(x.tolist()) for x in flat], dtype=np.float64)

    def torsion_energies(self, angles: np.ndarray) -> np.ndarray:
        """[B, K] radians -> [B] float64 kcal/mol of the conformers set_torsions(x_L, angles)."""
        return self.energies(set_torsions(self.positions_local, self.molecule, angles))


def reference_energy(molecule: Molecule, positions: np.ndarray, variant: str = "MMFF94s") -> np.ndarray:
    """The reference code's way: a new molecule and a new MMFF force field per conformer. [B] kcal/mol."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 2:
        positions = positions[None]
    energies = []
    for x in positions:
        mol = molecule_with_positions(molecule, x)  # must outlive the force field, which points into it
        energies.append(mmff_force_field(mol, variant).CalcEnergy())
    return np.array(energies, dtype=np.float64)
