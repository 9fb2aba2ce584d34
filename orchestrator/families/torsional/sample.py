"""`python -m orchestrator sample`: zero-shot samples of a trained Torsional-GFN for any molecule.

    model.pt of the trial run's newest evaluation (MLflow)
    -> a TorsionalLearner over one (molecule, local structure): the ETKDG + MMFF conformer, or MD frame 0
    -> N on-policy samples x ~ PF_theta(. | G, L), with log PF of their trajectories
    -> E(x) kcal/mol, RDKit MMFF with the trial's variant (not clamped, unlike a trial's samples.parquet)
    -> FILE.parquet (samples.parquet's columns) or FILE.sdf (one conformer per sample)
Runs in this process on the CPU; no Ray. Any molecule of 1 to molecule.MAX_TORSIONS torsions: its memory is bounded
(basins.py sums windings torsion by torsion beyond a few torsions, and every step works in bounded chunks), and a
molecule beyond the limit ends with exit code 2 and a message naming it (docs/torsional.md).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from orchestrator.errors import OrchestratorError
from orchestrator.tracking import download_latest_eval_file
from workloads.torsional.data import zero_shot_entry
from workloads.torsional.export import (
    learner_from_model,
    load_model,
    model_config,
    write_samples_parquet,
    write_samples_sdf,
)
from workloads.torsional.learner import SampleRow, TorsionalLearner
from workloads.torsional.molecule import MoleculeError

FORMATS = (".parquet", ".sdf")
ENERGY_CHUNK = 4096
"""Conformers built at once for their energies ([chunk, atoms, 3])."""


def draw(learner: TorsionalLearner, index: int, num_samples: int, seed: int) -> list[SampleRow]:
    """num_samples on-policy samples of learner.entries[index] with their RDKit MMFF energies (not clamped). The
    generator is seeded per call, so a structure's samples do not depend on the learner's other entries."""
    entry = learner.entries[index]
    angles, log_pf, _ = learner.sample(index, num_samples, torch.Generator().manual_seed(seed))  # [n, K], [n]
    energies = np.concatenate(
        [learner.rdkit.energies(entry, angles[i : i + ENERGY_CHUNK]) for i in range(0, num_samples, ENERGY_CHUNK)]
    )  # [n] kcal/mol
    return [
        SampleRow(entry.smiles, entry.structure_id, a, e, lp)
        for a, e, lp in zip(angles.tolist(), energies.tolist(), log_pf.tolist())
    ]


def sample(
    run_id: str, smiles: str, structure: str, num_samples: int, out: Path, tracking_uri: str, seed: int = 0
) -> str:
    """Writes `out`; returns a one-line summary. User mistakes raise OrchestratorError."""
    out = Path(out)
    if out.suffix not in FORMATS:
        raise OrchestratorError(f"sample --out {out}: expected a file name ending in {' or '.join(FORMATS)}.")
    if num_samples < 1:
        raise OrchestratorError(f"sample -n: expected a number of samples >= 1, found {num_samples}.")
    with tempfile.TemporaryDirectory() as tmp:
        artifact, path = download_latest_eval_file(tracking_uri, run_id, "model.pt", Path(tmp))
        model = load_model(path)
    try:
        config = model_config(model)
    except ValidationError as error:
        found = re.sub(r"\s*\n\s*", "; ", str(error))
        raise OrchestratorError(
            f"{artifact} of run {run_id}: its config does not fit this version's TorsionalConfig: {found}."
        ) from error
    try:
        entry = zero_shot_entry(smiles, structure, config)
    except MoleculeError as error:
        raise OrchestratorError(f"sample --smiles: {error}") from error

    rows = draw(learner_from_model(model, [entry]), 0, num_samples, seed)
    energies = np.array([row.energy_kcal_mol for row in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".sdf":
        write_samples_sdf(out, entry, rows)
    else:
        write_samples_parquet(out, rows)
    return (
        f"{num_samples} samples of {smiles} ({entry.structure_id}, {entry.num_torsions} torsions) from {artifact} "
        f"of run {run_id} (step {model['step']}): energy min {np.min(energies):.2f}, median "
        f"{np.median(energies):.2f} kcal/mol -> {out}"
    )
