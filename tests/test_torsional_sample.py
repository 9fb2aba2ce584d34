"""A Torsional-GFN smoke trial's evaluation files read back as a user would (RDKit MMFF94s, pyarrow), and
`python -m orchestrator sample` on a molecule outside the training set, from that trial's MLflow run."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolTransforms

from orchestrator import cli
from orchestrator.families.torsional.driver import FINAL_EVAL_SAMPLES
from orchestrator.spec import load_sweep
from tests.conftest import ROOT, orchestrator_cli, smoke_run
from workloads.torsional.data import SPLITS, build_dataset, zero_shot_entry
from workloads.torsional.molecule import find_torsions

EVAL_FILES = ("samples.parquet", "structures.sdf", "torsions.json", "model.pt")
NEW_SMILES = "CC(C)O"  # isopropanol: in neither the smoke training nor validation set


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """One smoke sweep (one trial) run as a user runs it: its MLflow store, run, config, the downloaded eval folders
    by step, and the command's output."""
    tmp = tmp_path_factory.mktemp("torsional")
    uri = f"sqlite:///{tmp / 'm.db'}"
    overrides = [f"config.cache_dir={tmp / 'cache'}", "tune.num_samples=1", "search_space={}"]
    result = smoke_run("torsional.yaml", tmp, *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    spec = load_sweep(ROOT / "sweeps" / "torsional.yaml", overrides).smoke()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("torsional").experiment_id])
    (child,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    run_id = child.info.run_id
    evals = {
        int(Path(f.path).name.removeprefix("step_")): Path(client.download_artifacts(run_id, f.path, str(tmp)))
        for f in client.list_artifacts(run_id, "eval")
    }
    return SimpleNamespace(
        uri=uri, run_id=run_id, config=spec.config, evals=evals, tmp=tmp, output=result.stdout + result.stderr
    )


def test_a_clean_finish_prints_no_traceback(trial):
    """The torsional learner holds its energy workers' handles: ended by Ray's SIGTERM at the trial's exit, it printed
    `Exception ignored in: ActorHandle.__del__ ... SystemExit`."""
    assert "Traceback" not in trial.output and "Exception ignored" not in trial.output, trial.output[-3000:]


def test_smoke_trial_logs_metrics_by_split_figures_and_replay(trial):
    run = MlflowClient(trial.uri).get_run(trial.run_id)
    assert run.info.status == "FINISHED"
    for split in SPLITS:
        assert 0 <= run.data.metrics[f"eval/{split}/jsd"] <= 1
    assert run.data.metrics["train/buffer_size"] > 0  # terminal states reached the replay-buffer actor
    assert run.data.metrics["train/replay_fraction"] > 0  # and replayed states came back into training batches
    final = trial.evals[max(trial.evals)]
    assert any(f.suffix == ".png" for f in final.iterdir())
    table = pq.read_table(final / "samples.parquet")
    assert table.column_names == ["smiles", "local_structure", "torsions", "energy_kcal_mol", "log_pf"]
    assert set(table.column("smiles").to_pylist()) == {*trial.config.train_smiles, *trial.config.val_smiles}


def _read_sdf(path: Path) -> list[Chem.Mol]:
    mols = list(Chem.SDMolSupplier(str(path), removeHs=False))
    assert all(m is not None for m in mols), path
    return mols


def _mmff94s(mol: Chem.Mol):
    return AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol, mmffVariant="MMFF94s"))


def _set_dihedrals(mol: Chem.Mol, quads: list[list[int]], angles: list[float]) -> np.ndarray:
    """RDKit's own dihedral setter on mol's conformer (in place) -> [N, 3] positions."""
    conf = mol.GetConformer()
    for quad, angle in zip(quads, angles):
        rdMolTransforms.SetDihedralRad(conf, *quad, angle)
    return conf.GetPositions()


def _angle_gap(a, b) -> np.ndarray:
    """|a - b| on the circle."""
    d = np.mod(np.asarray(a) - np.asarray(b), 2 * math.pi)
    return np.minimum(d, 2 * math.pi - d)


def test_every_evaluation_writes_the_files_and_the_final_one_2000_samples(trial):
    assert max(trial.evals) == trial.config.total_iters and len(trial.evals) >= 2
    structures = {e.structure_id for e in build_dataset(trial.config)}  # MD frames come from the trial's cache
    for step, folder in trial.evals.items():
        assert all((folder / name).is_file() for name in EVAL_FILES), (step, sorted(p.name for p in folder.iterdir()))
        counts = Counter(pq.read_table(folder / "samples.parquet").column("local_structure").to_pylist())
        assert set(counts) == structures
        final = step == trial.config.total_iters
        expected = max(trial.config.eval_samples, FINAL_EVAL_SAMPLES) if final else trial.config.eval_samples
        assert set(counts.values()) == {expected}, (step, counts)
        if final:
            assert min(counts.values()) >= 2000  # the floor, whatever the config says


def test_structures_sdf_and_torsions_json_are_the_trial_structures(trial):
    folder = trial.evals[trial.config.total_iters]
    mols = _read_sdf(folder / "structures.sdf")
    torsions = json.loads((folder / "torsions.json").read_text())
    entries = build_dataset(trial.config)
    assert [m.GetProp("local_structure") for m in mols] == [e.structure_id for e in entries]
    for mol, entry in zip(mols, entries):
        assert (mol.GetProp("smiles"), mol.GetProp("split")) == (entry.smiles, entry.split)
        with_h = Chem.AddHs(Chem.MolFromSmiles(entry.smiles))
        assert [a.GetAtomicNum() for a in mol.GetAtoms()] == [a.GetAtomicNum() for a in with_h.GetAtoms()]
        np.testing.assert_array_equal(mol.GetConformer().GetPositions(), entry.positions)  # exactly, 6 decimals
        quads = torsions[entry.smiles]
        assert quads == find_torsions(with_h).tolist() and quads
        for a, b, c, d in quads:  # a-b-c-d is a bonded chain whose b-c bond is rotatable
            assert mol.GetBondBetweenAtoms(a, b) and mol.GetBondBetweenAtoms(c, d)
            bond = mol.GetBondBetweenAtoms(b, c)
            assert bond.GetBondType() == Chem.BondType.SINGLE and not bond.IsInRing()
    assert set(torsions) == {e.smiles for e in entries}


def test_logged_energies_recompute_with_rdkit_from_the_sdf_and_torsions(trial):
    folder = trial.evals[trial.config.total_iters]
    structures = {m.GetProp("local_structure"): m for m in _read_sdf(folder / "structures.sdf")}
    torsions = json.loads((folder / "torsions.json").read_text())
    rows = pq.read_table(folder / "samples.parquet").to_pylist()
    force_fields = {}
    for key, mol in structures.items():
        mol = Chem.Mol(mol)
        force_fields[key] = (mol, _mmff94s(mol), _mmff94s(mol).CalcEnergy())  # E_L: the structure's own energy
    worst, clamped = 0.0, 0
    for row in rows:
        mol, ff, e_structure = force_fields[row["local_structure"]]
        quads = torsions[row["smiles"]]
        positions = _set_dihedrals(mol, quads, row["torsions"])
        measured = [rdMolTransforms.GetDihedralRad(mol.GetConformer(), *q) for q in quads]
        assert _angle_gap(measured, row["torsions"]).max() < 1e-6
        energy = ff.CalcEnergy(positions.reshape(-1).tolist())
        if row["energy_kcal_mol"] >= e_structure + trial.config.energy_clamp_kcal_mol - 1e-3:  # clamped (clash)
            clamped += 1
            assert energy >= row["energy_kcal_mol"] - 1e-3
        else:
            worst = max(worst, abs(energy - row["energy_kcal_mol"]))
    assert worst <= 1e-3, worst
    assert clamped < len(rows) / 2, clamped


def test_sample_cli_for_a_molecule_outside_the_training_set(trial):
    assert NEW_SMILES not in trial.config.train_smiles + trial.config.val_smiles
    assert len(find_torsions(Chem.AddHs(Chem.MolFromSmiles(NEW_SMILES)))) >= 1
    n = 40
    parquet = trial.tmp / "out" / "cc_c_o.parquet"
    result = orchestrator_cli(
        "sample",
        "--run",
        trial.run_id,
        "--smiles",
        NEW_SMILES,
        "-n",
        str(n),
        "--out",
        str(parquet),
        "--tracking-uri",
        trial.uri,
        "--seed",
        "3",
        cwd=trial.tmp,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pq.read_table(parquet).to_pylist()
    assert len(rows) == n and {(r["smiles"], r["local_structure"]) for r in rows} == {
        (NEW_SMILES, f"{NEW_SMILES}/etkdg")
    }
    entry = zero_shot_entry(NEW_SMILES, "etkdg", trial.config)  # the structure: ETKDG + MMFF, as for training
    mol = Chem.Mol(entry.molecule.mol)
    for i, xyz in enumerate(entry.positions.tolist()):
        mol.GetConformer().SetAtomPosition(i, xyz)
    ff = _mmff94s(mol)
    quads = find_torsions(Chem.AddHs(Chem.MolFromSmiles(NEW_SMILES))).tolist()
    energies = [ff.CalcEnergy(_set_dihedrals(mol, quads, r["torsions"]).reshape(-1).tolist()) for r in rows]
    np.testing.assert_allclose(energies, [r["energy_kcal_mol"] for r in rows], atol=1e-3, rtol=0)
    assert len({tuple(r["torsions"]) for r in rows}) == n and all(math.isfinite(r["log_pf"]) for r in rows)


def test_sample_sdf_from_an_md_structure(trial, monkeypatch):
    """In process (the CLI's own main), to spare a second start of torch and MLflow."""
    monkeypatch.chdir(trial.tmp)
    n, sdf = 30, trial.tmp / "out" / "cc_c_o.sdf"
    assert (
        cli.main(
            [
                "sample",
                "--run",
                trial.run_id,
                "--smiles",
                NEW_SMILES,
                "--structure",
                "md",
                "-n",
                str(n),
                "--out",
                str(sdf),
                "--tracking-uri",
                trial.uri,
            ]
        )
        == 0
    )
    conformers = _read_sdf(sdf)
    assert len(conformers) == n
    quads = find_torsions(Chem.AddHs(Chem.MolFromSmiles(NEW_SMILES))).tolist()
    lengths = []
    for mol in conformers:
        assert mol.GetProp("local_structure") == f"{NEW_SMILES}/md0" and mol.GetProp("smiles") == NEW_SMILES
        measured = [rdMolTransforms.GetDihedralRad(mol.GetConformer(), *q) for q in quads]
        assert _angle_gap(measured, json.loads(mol.GetProp("torsions"))).max() < 1e-5
        assert abs(_mmff94s(mol).CalcEnergy() - float(mol.GetProp("energy_kcal_mol"))) <= 1e-3
        lengths.append(
            [
                rdMolTransforms.GetBondLength(mol.GetConformer(), b.GetBeginAtomIdx(), b.GetEndAtomIdx())
                for b in mol.GetBonds()
            ]
        )
    np.testing.assert_allclose(lengths, np.broadcast_to(lengths[0], np.shape(lengths)), atol=1e-5)  # one structure


@pytest.mark.parametrize("smiles, run, named", [("C1CC(", None, "C1CC("), ("CCO", "0" * 32, "0" * 32)])
def test_sample_errors_exit_2_naming_what_is_wrong(trial, capsys, smiles, run, named):
    out = trial.tmp / "bad.parquet"
    code = cli.main(
        [
            "sample",
            "--run",
            run or trial.run_id,
            "--smiles",
            smiles,
            "-n",
            "5",
            "--out",
            str(out),
            "--tracking-uri",
            trial.uri,
        ]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and named in errors[0], errors  # one paragraph, no traceback
    assert not out.exists()
