"""A molecule of the Torsional-GFN workload: explicit-H RDKit molecule, relaxed conformer, torsions.

SMILES -> add hydrogens -> ETKDG embedding (seeded) -> MMFF94s / MMFF94 relaxation.

Torsion rule (torsional-diffusion's rotatable-bond rule, which counts H-bearing rotors):
with explicit hydrogens, a bond b-c is a torsion when
    1. it is a single bond,
    2. it is not in a ring,
    3. removing it leaves two connected parts of at least 2 atoms each.
So methyl, NH2, OH, CCl3 and CF3 rotors count (`CCC` has 2 torsions, anisole `COc1ccccc1` has 2),
while a bond to a lone H or halogen does not (one part has 1 atom).
For each torsion bond b-c (b < c by atom index) the dihedral is (a, b, c, d) with a the heaviest
neighbour of b other than c and d the heaviest neighbour of c other than b
(highest atomic number, ties broken by the lowest atom index).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import AllChem

VARIANTS = ("MMFF94", "MMFF94s")
MAX_TORSIONS = 16
"""The most torsions of a molecule the workload takes (`sample`'s zero-shot molecules; a sweep's are held to the
exact grid's limit, ground_truth.MAX_GRID_TORSIONS). Memory no longer grows exponentially with K (basins.py bounds
its windings, every step works in bounded chunks: `sample` on heptadecane, 16 torsions, peaks at 1.32 GB), but the
basin search behind the drift's guide keeps 512 starts for any K while a chain has ~3^K minima, and its cost grows
with the atom pairs (minutes at 16 torsions): beyond that the guide describes a vanishing share of the target
(docs/torsional.md)."""


class MoleculeError(ValueError):
    """A SMILES that cannot be used: it does not parse, embed, get MMFF parameters, has no torsion or more than the
    workload takes."""

    def __init__(self, smiles: str, what: str):
        self.smiles = smiles
        self.what = what
        super().__init__(f"Molecule {smiles!r} cannot be used in the torsional workload: {what}.")


@dataclass(frozen=True, eq=False)
class Molecule:
    """Immutable; compared and hashed by identity (one object per loaded molecule)."""

    smiles: str
    """The SMILES it was loaded from."""
    mol: Chem.Mol
    """Explicit-H RDKit molecule with one conformer: the ETKDG embedding relaxed with MMFF."""
    torsions: np.ndarray
    """[K, 4] int64 atom quadruples (a, b, c, d) of the rotatable bonds b-c."""
    variant: str = "MMFF94s"
    """MMFF variant used for the relaxation."""

    @property
    def num_atoms(self) -> int:
        return self.mol.GetNumAtoms()

    @property
    def num_torsions(self) -> int:
        return len(self.torsions)

    def positions(self) -> np.ndarray:
        """[N, 3] float64 Angstrom, the relaxed conformer."""
        return np.array(self.mol.GetConformer().GetPositions(), dtype=np.float64)


def _side_size(mol: Chem.Mol, start: int, blocked: int) -> int:
    """Number of atoms reachable from `start` without crossing the bond to `blocked`."""
    seen, stack = {start}, [start]
    while stack:
        i = stack.pop()
        for nb in mol.GetAtomWithIdx(i).GetNeighbors():
            j = nb.GetIdx()
            if j in seen or (i == start and j == blocked):
                continue
            seen.add(j)
            stack.append(j)
    return len(seen)


def _heaviest_neighbour(mol: Chem.Mol, atom: int, exclude: int) -> int:
    nbs = [nb for nb in mol.GetAtomWithIdx(atom).GetNeighbors() if nb.GetIdx() != exclude]
    return min(nbs, key=lambda nb: (-nb.GetAtomicNum(), nb.GetIdx())).GetIdx()


def find_torsions(mol: Chem.Mol) -> np.ndarray:
    """[K, 4] int64 torsion quadruples of an explicit-H molecule, by the rule in the module docstring."""
    quads = []
    for bond in mol.GetBonds():
        if bond.GetBondType() != Chem.BondType.SINGLE or bond.IsInRing():
            continue
        b, c = sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        if _side_size(mol, b, c) < 2 or _side_size(mol, c, b) < 2:
            continue
        quads.append((_heaviest_neighbour(mol, b, c), b, c, _heaviest_neighbour(mol, c, b)))
    return np.array(quads, dtype=np.int64).reshape(-1, 4)


def load_molecule(smiles: str, seed: int = 0, variant: str = "MMFF94s") -> Molecule:
    """SMILES -> Molecule (explicit H, ETKDGv3 embedding with `seed`, relaxed with `variant`).

    Raises MoleculeError naming the SMILES for a bad SMILES, a failed embedding, missing MMFF
    parameters, no rotatable torsion, or more than MAX_TORSIONS.
    """
    molecule = _load(smiles, seed, variant)
    if molecule.num_torsions > MAX_TORSIONS:
        raise MoleculeError(
            smiles,
            f"it has {molecule.num_torsions} torsions, more than the {MAX_TORSIONS} the torsional workload takes "
            "(the basin search behind the drift's guide covers a vanishing share of the ~3^K minima of more; "
            "docs/torsional.md)",
        )
    return molecule


def _load(smiles: str, seed: int, variant: str) -> Molecule:
    """load_molecule without the torsion limit."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    RDLogger.DisableLog("rdApp.*")
    try:
        mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles else None
    finally:
        RDLogger.EnableLog("rdApp.*")
    if mol is None:
        raise MoleculeError(smiles, "RDKit cannot parse the SMILES")
    if len(Chem.GetMolFrags(mol)) > 1:
        raise MoleculeError(smiles, "it has several disconnected fragments; the workload needs one connected molecule")
    mol = Chem.AddHs(mol)

    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True  # the fallback RDKit recommends for hard cases
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise MoleculeError(smiles, f"ETKDG embedding failed (seed {seed}, also with random coordinates)")

    props = AllChem.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
    if props is None or not AllChem.MMFFHasAllMoleculeParams(mol):
        raise MoleculeError(smiles, f"MMFF setup failed: {variant} has no parameters for some atom or term")
    ff = AllChem.MMFFGetMoleculeForceField(mol, props)
    if ff is None:
        raise MoleculeError(smiles, f"MMFF setup failed: RDKit could not build the {variant} force field")
    ff.Minimize(maxIts=10_000)

    torsions = find_torsions(mol)
    if len(torsions) == 0:
        raise MoleculeError(smiles, "it has no rotatable torsion (no acyclic single bond with >= 2 atoms on each side)")
    return Molecule(smiles=smiles, mol=Chem.Mol(mol), torsions=torsions, variant=variant)


@lru_cache(maxsize=4096)
def check_smiles(smiles: str, variant: str = "MMFF94s") -> tuple[int, str]:
    """(number of torsions, "") when load_molecule's checks pass but for the torsion limit (parse, one fragment,
    ETKDG embedding with seed 0 as the data set makes it, MMFF parameters, >= 1 torsion), else (0, the
    MoleculeError's `what`). Cached per SMILES and variant: a sweep's config is validated once per trial and
    variant, and each validation asks again."""
    if not isinstance(smiles, str):
        return 0, "a SMILES must be a string"
    try:
        return _load(smiles, 0, variant).num_torsions, ""
    except MoleculeError as error:
        return 0, error.what
