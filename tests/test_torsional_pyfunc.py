"""The torsional pyfunc model (orchestrator/families/torsional/pyfunc.py): a briefly trained learner's model folder,
logged as a trial logs it, loaded by `runs:/` URI in a fresh process; its conformers' energies recomputed with
RDKit's own dihedral setter and MMFF94s, and its samples equal to the `sample` command's. Then the driver: the folder
is written at the final evaluation only."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient
from rdkit import Chem

from orchestrator import cli
from orchestrator.families.torsional.pyfunc import REQUIREMENTS, save_pyfunc
from orchestrator.trial import stop_actors
from tests.test_torsional_sample import NEW_SMILES, _mmff94s, _set_dihedrals
from workloads.torsional.config import TorsionalConfig
from workloads.torsional.data import zero_shot_entry
from workloads.torsional.export import SAMPLE_COLUMNS, save_model
from workloads.torsional.learner import TorsionalLearner
from workloads.torsional.molecule import find_torsions

STEP_FOLDER = "eval/step_0000003"
PREDICT = """
import sys
import mlflow
import pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.DataFrame({"smiles": [sys.argv[3], "CCO", sys.argv[3]]})
model.predict(frame, params={"n": 25, "seed": 3}).to_parquet(sys.argv[2] + "/frame.parquet")
model.predict(["CCO"], params={"n": 5}).to_parquet(sys.argv[2] + "/list.parquet")
"""


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A learner trained 3 iterations on propane and methyl formate (ETKDG structures), its model.pt and model/ in
    an MLflow run's eval/step_0000003/, as the driver's writers and the trial's log_artifacts leave them."""
    tmp = tmp_path_factory.mktemp("pyfunc")
    config = TorsionalConfig(cache_dir=str(tmp / "cache")).smoke()
    entries = [
        dataclasses.replace(zero_shot_entry(s, "etkdg", config), split="train_structures") for s in ("CCC", "COC=O")
    ]
    learner = TorsionalLearner(config, seed=5, entries=entries)
    learner.train(3)
    state = learner.state_dict()
    folder = tmp / "eval"
    folder.mkdir()
    save_model(folder / "model.pt", state)
    save_pyfunc(folder / "model", state)
    uri = f"sqlite:///{tmp / 'm.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("pyfunc", artifact_location=(tmp / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_artifacts(run_id, str(folder), STEP_FOLDER)
    return SimpleNamespace(tmp=tmp, uri=uri, run_id=run_id, config=config, folder=folder, state=state)


def test_the_folder_is_a_small_mlflow_model_with_pinned_requirements(logged):
    model = logged.folder / "model"
    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert mlmodel["metadata"] == {"step": 3, "seed": 5}
    assert [p["name"] for p in json.loads(mlmodel["signature"]["params"])] == ["n", "seed", "structure"]
    assert [c["name"] for c in json.loads(mlmodel["signature"]["outputs"])] == list(SAMPLE_COLUMNS)
    assert (model / "artifacts" / "model.pt").read_bytes() == (logged.folder / "model.pt").read_bytes()
    pins = (model / "requirements.txt").read_text().split()
    assert pins == [f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS]
    size = sum(f.stat().st_size for f in model.rglob("*") if f.is_file())
    assert size < (logged.folder / "model.pt").stat().st_size + 20_000  # model.pt and a few small text files


def test_predict_in_a_fresh_process_gives_conformers_whose_energies_rdkit_recomputes(logged):
    assert NEW_SMILES not in ("CCC", "COC=O")
    out = logged.tmp / "predicted"
    out.mkdir()
    model_uri = f"runs:/{logged.run_id}/{STEP_FOLDER}/model"
    env = {**os.environ, "MLFLOW_TRACKING_URI": logged.uri}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PREDICT), model_uri, str(out), NEW_SMILES],
        cwd=logged.tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pq.read_table(out / "frame.parquet").to_pandas()
    assert list(frame.columns) == list(SAMPLE_COLUMNS)
    assert frame["smiles"].tolist() == [NEW_SMILES] * 25 + ["CCO"] * 25 + [NEW_SMILES] * 25
    first, again = frame.iloc[:25], frame.iloc[50:]
    assert first["torsions"].map(list).tolist() == again["torsions"].map(list).tolist()  # per molecule, one seed
    listed = pq.read_table(out / "list.parquet").to_pandas()
    assert listed["smiles"].tolist() == ["CCO"] * 5 and listed["local_structure"].tolist() == ["CCO/etkdg"] * 5

    # The local structure is the ETKDG + MMFF conformer; set each sample's torsions on it with RDKit's own setter.
    entry = zero_shot_entry(NEW_SMILES, "etkdg", logged.config)
    mol = Chem.Mol(entry.molecule.mol)
    for i, xyz in enumerate(entry.positions.tolist()):
        mol.GetConformer().SetAtomPosition(i, xyz)
    ff = _mmff94s(mol)
    quads = find_torsions(Chem.AddHs(Chem.MolFromSmiles(NEW_SMILES))).tolist()
    rows = first.to_dict("records")
    assert all(len(r["torsions"]) == len(quads) and r["local_structure"] == f"{NEW_SMILES}/etkdg" for r in rows)
    energies = [ff.CalcEnergy(_set_dihedrals(mol, quads, list(r["torsions"])).reshape(-1).tolist()) for r in rows]
    np.testing.assert_allclose(energies, [r["energy_kcal_mol"] for r in rows], atol=1e-3, rtol=0)
    assert len({tuple(r["torsions"]) for r in rows}) == len(rows) and all(math.isfinite(r["log_pf"]) for r in rows)

    # The same draws as `python -m orchestrator sample --seed 3` on the run's model.pt.
    parquet = logged.tmp / "sample.parquet"
    args = ["sample", "--run", logged.run_id, "--smiles", NEW_SMILES, "-n", "25", "--seed", "3", "--out", str(parquet)]
    assert cli.main([*args, "--tracking-uri", logged.uri]) == 0
    sampled = pq.read_table(parquet).to_pylist()
    assert [s["torsions"] for s in sampled] == [list(r["torsions"]) for r in rows]
    np.testing.assert_array_equal([s["log_pf"] for s in sampled], [r["log_pf"] for r in rows])


def test_predict_refuses_a_bad_molecule_naming_it(logged):
    import mlflow

    model = mlflow.pyfunc.load_model(str(logged.folder / "model"))
    with pytest.raises(ValueError, match="C1CC\\("):
        model.predict(["CCO", "C1CC("], params={"n": 2})
    with pytest.raises(ValueError, match="n >= 1"):
        model.predict(["CCO"], params={"n": 0})
    # MLflow's schema check refuses an empty input before predict; the model itself answers no rows.
    assert list(model.unwrap_python_model().predict(None, []).columns) == list(SAMPLE_COLUMNS)


def test_the_driver_writes_the_model_at_the_final_evaluation_only(ray_cluster, tmp_path):
    import mlflow

    from tests.test_behaviour_unchanged import build_driver

    driver = build_driver("torsional-tb", "pyfunc_00000")
    written = {}
    try:
        while not driver.finished:
            _, files = driver.advance()
            written[driver.step] = files
    finally:
        stop_actors(driver)
    final = max(written)
    assert [step for step, files in written.items() if "model" in files] == [final] and len(written) >= 2
    assert all("model.pt" in files for files in written.values())
    written[final]["model"](tmp_path / "model")
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    assert model.metadata.metadata["step"] == final
    predicted = model.predict(["CCO"], params={"n": 4})
    assert len(predicted) == 4 and np.isfinite(predicted["energy_kcal_mol"]).all()
