"""Files a torsional trial writes at each evaluation, readable without this code (RDKit, pyarrow, torch):

    structures.sdf   every local structure as a conformer of its molecule (explicit H); properties smiles,
                     local_structure (StructureEntry.structure_id), split
    torsions.json    {smiles: [[a, b, c, d], ...]}: torsion atom quadruples, 0-based, in the SDF's atom order
    samples.parquet  smiles, local_structure, torsions (radians, in torsions.json's order), energy_kcal_mol, log_pf
    model.pt         {config, policy, log_z_net, step, seed}: what rebuilds the policy and the log Z network
                     (learner_from_model) without the Tune checkpoint; no optimizer or RNG state

A sample is its local structure with dihedral(a_k, b_k, c_k, d_k) set to torsions[k] (a rigid rotation about
bond b_k-c_k), so MMFF of that conformer recomputes energy_kcal_mol (samples.parquet clamps it at
E_L + energy_clamp_kcal_mol, E_L the structure's own energy). SDF files are V3000: their 6-decimal coordinates are
exactly the local structures (data.POSITION_DECIMALS), where V2000's 4 decimals would shift energies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from rdkit import Chem

from workloads.torsional.config import TorsionalConfig
from workloads.torsional.conformer import set_torsions
from workloads.torsional.data import StructureEntry
from workloads.torsional.energy_rdkit import molecule_with_positions
from workloads.torsional.learner import SampleRow, TorsionalLearner

SAMPLE_COLUMNS = ("smiles", "local_structure", "torsions", "energy_kcal_mol", "log_pf")
MODEL_KEYS = ("config", "policy", "log_z_net", "step", "seed")
"""The part of TorsionalLearner.state_dict() that model.pt keeps."""
SDF_CHUNK = 4096
"""Sample conformers ([chunk, atoms, 3]) built at once when writing an SDF."""


def _write_sdf(path: Path, mols: Iterable[Chem.Mol]) -> None:
    writer = Chem.SDWriter(str(path))
    writer.SetForceV3000(True)  # 6 decimals per coordinate (module docstring)
    for mol in mols:
        writer.write(mol)
    writer.close()


def _conformer(entry: StructureEntry, positions: np.ndarray, properties: dict[str, str]) -> Chem.Mol:
    mol = molecule_with_positions(entry.molecule, positions)
    mol.SetProp("_Name", entry.structure_id)
    for key, value in properties.items():
        mol.SetProp(key, value)
    return mol


def write_structures_sdf(path: Path, entries: list[StructureEntry]) -> None:
    """structures.sdf: one record per (molecule, local structure), in the learner's entry order."""
    _write_sdf(
        path,
        (
            _conformer(e, e.positions, {"smiles": e.smiles, "local_structure": e.structure_id, "split": e.split})
            for e in entries
        ),
    )


def write_torsions_json(path: Path, entries: list[StructureEntry]) -> None:
    """torsions.json: per SMILES, its [K, 4] torsion quadruples (molecule.py's rule and order)."""
    torsions = {e.smiles: e.molecule.torsions.tolist() for e in entries}
    path.write_text(json.dumps(torsions, indent=1))


def write_samples_parquet(path: Path, rows: list[SampleRow]) -> None:
    """samples.parquet: one row per sample, columns SAMPLE_COLUMNS."""
    columns = {name: [getattr(row, name) for row in rows] for name in SAMPLE_COLUMNS}
    pq.write_table(pa.table(columns), path)


def write_samples_sdf(path: Path, entry: StructureEntry, rows: list[SampleRow]) -> None:
    """One conformer per sample of one structure; properties smiles, local_structure, torsions (JSON list, radians),
    energy_kcal_mol, log_pf. Conformers are built SDF_CHUNK at a time as they are written."""

    def conformers():
        for i in range(0, len(rows), SDF_CHUNK):
            angles = np.array([row.torsions for row in rows[i : i + SDF_CHUNK]], dtype=np.float64)
            yield from set_torsions(entry.positions, entry.molecule, angles.reshape(len(angles), entry.num_torsions))

    _write_sdf(
        path,
        (
            _conformer(
                entry,
                x,
                {
                    "smiles": row.smiles,
                    "local_structure": row.local_structure,
                    "torsions": json.dumps(row.torsions),
                    "energy_kcal_mol": repr(row.energy_kcal_mol),
                    "log_pf": repr(row.log_pf),
                },
            )
            for x, row in zip(conformers(), rows)
        ),
    )


def save_model(path: Path, learner_state: dict[str, Any]) -> None:
    """model.pt from a TorsionalLearner.state_dict()."""
    torch.save({key: learner_state[key] for key in MODEL_KEYS}, path)


def load_model(path: Path) -> dict[str, Any]:
    """model.pt on the CPU; weights_only: loading a downloaded file runs no pickled code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def model_config(model: dict[str, Any]) -> TorsionalConfig:
    """The trial's resolved config; raises pydantic's ValidationError when it does not fit this TorsionalConfig."""
    return TorsionalConfig(**model["config"])


def learner_from_model(model: dict[str, Any], entries: list[StructureEntry], device: str = "cpu") -> TorsionalLearner:
    """A TorsionalLearner over `entries` (any molecules) with model.pt's policy and log Z network, for sampling."""
    learner = TorsionalLearner(model_config(model), seed=model["seed"], device=device, entries=entries)
    learner.policy.load_state_dict(model["policy"])
    learner.log_z_net.load_state_dict(model["log_z_net"])
    learner.step = model["step"]
    return learner
