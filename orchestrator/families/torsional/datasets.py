"""A torsional trial's molecule lists as MLflow dataset inputs: one row per molecule, with cheap descriptors.

The descriptors come from the SMILES alone (RDKit's parser, no embedding or MD: well under a millisecond per
molecule); the torsions are counted by the workload's own rule (molecule.find_torsions). Each row also says how
many MD frames of the molecule the trial trains on and evaluates on, and how they are made (force field, MD seed,
temperature), so the digest changes with any of these.
"""

from __future__ import annotations

import pandas as pd
from rdkit import Chem
from rdkit.Chem.rdMolDescriptors import CalcMolFormula

from orchestrator.registry import InputData
from workloads.torsional.config import TorsionalConfig
from workloads.torsional.molecule import find_torsions


def _molecules(smiles: list[str], trained_frames: int, unseen_frames: int, config: TorsionalConfig) -> pd.DataFrame:
    rows = []
    for s in smiles:  # the config validated every SMILES: it parses
        mol = Chem.MolFromSmiles(s)
        with_h = Chem.AddHs(mol)
        rows.append(
            {
                "smiles": s,
                "formula": CalcMolFormula(mol),
                "heavy_atoms": mol.GetNumHeavyAtoms(),
                "atoms": with_h.GetNumAtoms(),
                "torsions": len(find_torsions(with_h)),
                "md_frames_trained": trained_frames,
                "md_frames_unseen": unseen_frames,
                "force_field": config.variant,
                "temperature_k": config.temperature_k,
                "md_seed": config.md_seed,
            }
        )
    return pd.DataFrame(rows)


def molecule_sets(config: TorsionalConfig) -> list[InputData]:
    """train_smiles (trained on, with held-out frames of the same molecules) and val_smiles (zero-shot)."""
    c = config
    return [
        InputData(
            "train_molecules",
            "training",
            _molecules(c.train_smiles, c.num_train_structures, c.num_heldout_structures, c),
            "config.train_smiles",
        ),
        InputData(
            "val_molecules", "evaluation", _molecules(c.val_smiles, 0, c.num_val_structures, c), "config.val_smiles"
        ),
    ]
