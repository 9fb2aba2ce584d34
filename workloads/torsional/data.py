"""The Torsional-GFN data set: (molecule, local structure) entries in three splits.

For every training SMILES, one cached OpenMM MD trajectory (md.py) gives
    train_structures:   its first `num_train_structures` frames (the local structures trained on)
    unseen_structures:  its last `num_heldout_structures` frames (same molecule, never trained on)
and for every validation SMILES the first `num_val_structures` frames of its own MD (split unseen_molecules:
molecule and structures never trained on, evaluated zero-shot). Every SMILES is loaded (and rejected with a
MoleculeError naming it) before any MD runs, so a bad molecule stops the run before training starts; as every entry is
evaluated against an exact grid, a molecule with more than ground_truth.MAX_GRID_TORSIONS torsions is rejected too
(TorsionalConfig already refuses both when a sweep is validated).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from workloads.torsional.config import TorsionalConfig
from workloads.torsional.features import MolecularGraph, graph_from_molecule
from workloads.torsional.ground_truth import grid_torsion_problem
from workloads.torsional.md import MDSettings, md_frames, train_and_heldout_frames
from workloads.torsional.molecule import Molecule, MoleculeError, load_molecule

# Not "train": an evaluation metric eval/<split>/<name> must not read like the optimizer's train/<name>.
Split = Literal["train_structures", "unseen_structures", "unseen_molecules"]
SPLITS: tuple[Split, ...] = ("train_structures", "unseen_structures", "unseen_molecules")
POSITION_DECIMALS = 6
"""Local structures are rounded to 1e-6 A, the precision of an SDF V3000 file (export.py): the structure written to
structures.sdf is then exactly the one trained and evaluated on (MD frames are not minima: 1e-4 A, V2000's precision,
moves their energies by ~1e-2 kcal/mol, more in clashes)."""


@dataclass(frozen=True, eq=False)
class StructureEntry:
    """One (molecule, local structure): the policy's condition and one evaluation unit."""

    smiles: str
    structure_id: str
    """'<smiles>/md<f>': frame f of the molecule's MD trajectory (heldout frames continue the numbering);
    '<smiles>/etkdg': the relaxed embedding (zero_shot_entry)."""
    split: Split
    molecule: Molecule
    positions: np.ndarray
    """[N, 3] float64 Angstrom rounded to POSITION_DECIMALS, the MD frame (its bond lengths and angles are the local
    structure)."""
    graph: MolecularGraph

    @property
    def num_torsions(self) -> int:
        return self.molecule.num_torsions


def _entry(molecule: Molecule, positions: np.ndarray, name: str, split: Split) -> StructureEntry:
    """name: 'md<f>' (frame f of the molecule's MD) or 'etkdg' (its relaxed embedding)."""
    positions = np.round(positions, POSITION_DECIMALS)
    return StructureEntry(
        molecule.smiles,
        f"{molecule.smiles}/{name}",
        split,
        molecule,
        positions,
        graph_from_molecule(molecule.mol, positions, molecule.torsions),
    )


def load_molecules(smiles: list[str], variant: str) -> list[Molecule]:
    """Load every SMILES (each with an exact grid: at most MAX_GRID_TORSIONS torsions); raise one MoleculeError
    naming all the unusable ones."""
    molecules, bad, errors = [], [], []
    for s in smiles:
        try:
            molecule = load_molecule(s, variant=variant)
            if problem := grid_torsion_problem(molecule.num_torsions):
                raise MoleculeError(s, problem)
            molecules.append(molecule)
        except MoleculeError as e:
            bad.append(s)
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise MoleculeError(", ".join(bad), "; ".join(f"{s}: {e.what}" for s, e in zip(bad, errors)))
    return molecules


def build_dataset(config: TorsionalConfig, md_settings: MDSettings = MDSettings()) -> list[StructureEntry]:
    """All entries, training ones first (in train_smiles order), then unseen_structures, then unseen_molecules."""
    c = config
    settings = replace(md_settings, temperature_k=c.temperature_k)  # MD at the target's temperature
    train_molecules = load_molecules(c.train_smiles, c.variant)
    val_molecules = load_molecules(c.val_smiles, c.variant)
    train, heldout, val = [], [], []
    for m in train_molecules:
        tr, ho = train_and_heldout_frames(
            m, c.num_train_structures, c.num_heldout_structures, c.md_seed, c.variant, c.cache_dir, settings
        )
        train += [_entry(m, f, f"md{i}", "train_structures") for i, f in enumerate(tr)]
        heldout += [_entry(m, f, f"md{len(tr) + i}", "unseen_structures") for i, f in enumerate(ho)]
    for m in val_molecules:
        frames = md_frames(m, c.num_val_structures, c.md_seed, c.variant, c.cache_dir, settings)
        val += [_entry(m, f, f"md{i}", "unseen_molecules") for i, f in enumerate(frames)]
    return train + heldout + val


def zero_shot_entry(
    smiles: str, structure: Literal["etkdg", "md"], config: TorsionalConfig, md_settings: MDSettings = MDSettings()
) -> StructureEntry:
    """One (molecule, local structure) of any SMILES, to sample a trained policy zero-shot (split unseen_molecules):
        etkdg: the molecule's ETKDG embedding relaxed with MMFF                 ('<smiles>/etkdg')
        md:    frame 0 of its own MD, made (and cached) as a validation molecule's  ('<smiles>/md0')
    Raises MoleculeError naming the SMILES when it cannot be used."""
    molecule = load_molecule(smiles, variant=config.variant)
    if structure == "etkdg":
        return _entry(molecule, molecule.positions(), "etkdg", "unseen_molecules")
    settings = replace(md_settings, temperature_k=config.temperature_k)
    frames = md_frames(molecule, config.num_val_structures, config.md_seed, config.variant, config.cache_dir, settings)
    return _entry(molecule, frames[0], "md0", "unseen_molecules")
