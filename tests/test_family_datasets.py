"""Each family's data as MLflow dataset inputs (Family.datasets): the frames follow the config (a change of the data
changes the digest), describe the sets the workloads really make, MLflow accepts and logs them, and the shipped
sweeps' cost little."""

from __future__ import annotations

import time

import mlflow
import pytest
import yaml
from mlflow.entities import DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from orchestrator.registry import InputData, get_family
from orchestrator.spec import load_sweep
from tests.conftest import ROOT
from workloads.ensembles.config import SEDConfig
from workloads.torsional.config import TorsionalConfig
from workloads.torsional.molecule import check_smiles, load_molecule
from workloads.wcst.config import WcstConfig

BASE = {
    "torsional": TorsionalConfig().smoke(),
    "sed": SEDConfig(),
    "sed-digits": SEDConfig(dataset="digits"),
    "wcst": WcstConfig(),
}
CHANGES = {
    "torsional": [
        {"train_smiles": ["CCC", "CCO"]},
        {"val_smiles": ["CC(C)O"]},
        {"num_train_structures": 2},
        {"num_heldout_structures": 2},
        {"num_val_structures": 2},
        {"md_seed": 1},
        {"variant": "MMFF94"},
        {"temperature_k": 350.0},
    ],
    "sed": [
        {"num_train": 100},
        {"num_test": 100},
        {"num_ood": 100},
        {"data_seed": 1},
        {"held_out_labels": [1]},
        {"resolution": 32},
        {"corruptions": ["contrast"]},
        {"severities": [3]},
        {"dataset": "digits", "resolution": 8},
    ],
    "sed-digits": [{"held_out_labels": [0]}, {"resolution": 16}, {"data_seed": 3}],
    "wcst": [
        {"cues": ("color", "shape")},
        {"forced_cue": "shape"},
        {"num_levels": 2},
        {"train_size": 100},
        {"test_size": 100},
        {"resolution": 16},
        {"supersample": 2},
        {"data_seed": 1},
        {"off_diagonal_excludes_diagonal": False},
    ],
}


def _family(key: str):
    return get_family(key.split("-")[0])


def _digests(data: list[InputData]) -> tuple[str, ...]:
    return tuple(mlflow.data.from_pandas(d.frame, source=d.source, name=d.name).digest for d in data)


@pytest.mark.parametrize("key", list(CHANGES))
def test_each_change_of_the_data_changes_a_digest(key):
    base = BASE[key]
    data = _family(key).input_data(base)
    assert {d.context for d in data} == {"training", "evaluation"} and all(len(d.frame) for d in data)
    assert _digests(_family(key).input_data(base.model_copy())) == _digests(data)  # deterministic
    for change in CHANGES[key]:
        changed = type(base)(**{**base.model_dump(), **change})
        assert _digests(_family(key).input_data(changed)) != _digests(data), change


def test_the_samplers_family_reads_no_data():
    assert get_family("samplers").datasets is None and get_family("samplers").input_data(object()) == []


def test_torsional_rows_are_the_molecules_with_the_workloads_torsion_count():
    config = TorsionalConfig()
    train, val = get_family("torsional").input_data(config)
    assert (train.name, train.context, val.name, val.context) == (
        "train_molecules",
        "training",
        "val_molecules",
        "evaluation",
    )
    for data, smiles in ((train, config.train_smiles), (val, config.val_smiles)):
        assert data.frame["smiles"].tolist() == smiles
        for row in data.frame.to_dict("records"):  # the cheap count = the embedded molecule's
            assert row["torsions"] == check_smiles(row["smiles"], config.variant)[0]
            assert row["atoms"] == load_molecule(row["smiles"], variant=config.variant).mol.GetNumAtoms()
    assert train.frame["md_frames_trained"].tolist() == [config.num_train_structures] * len(config.train_smiles)
    assert val.frame["md_frames_unseen"].tolist() == [config.num_val_structures] * len(config.val_smiles)


@pytest.mark.parametrize("dataset", ["colordsprites", "digits"])
def test_sed_rows_are_the_sets_the_workload_makes(dataset):
    from workloads.ensembles.data import eval_sets, train_set

    config = SEDConfig(dataset=dataset).smoke()
    train, evaluation = get_family("sed").input_data(config)
    made_train, made = train_set(config), eval_sets(config)
    shape = list(made.id_test.images.shape[1:])
    sizes = {"train": len(made_train), "test": len(made.id_test), "ood": len(made.ood_images)}
    sizes |= {name: len(batch) for name, batch in made.shifts.items()}
    rows = [*train.frame.to_dict("records"), *evaluation.frame.to_dict("records")]
    assert {r["split"]: r["images"] for r in rows} == sizes
    assert all([r["channels"], r["height"], r["width"]] == shape for r in rows)


def test_digits_per_class_are_scikit_learns():
    import numpy as np

    from orchestrator.families.sed.datasets import DIGITS_PER_CLASS
    from workloads.data.digits import load_digits_arrays

    assert tuple(np.bincount(load_digits_arrays()[1]).tolist()) == DIGITS_PER_CLASS


@pytest.mark.parametrize("forced_cue", [None, "shape"])
def test_wcst_rows_are_the_sets_the_workload_makes(forced_cue):
    from workloads.wcst.data import wcst_data

    config = WcstConfig(forced_cue=forced_cue).smoke()
    train, evaluation = get_family("wcst").input_data(config)
    made = wcst_data(config, seed=0)
    assert train.frame["images"].sum() == len(made.train)
    tests = dict(zip(evaluation.frame["set"], evaluation.frame["images"]))
    assert tests == {"diagonal": len(made.diagonal_test)} | {
        f"off_diagonal:{cue}": len(s) for cue, s in made.off_diagonal_test.items()
    }
    rows = [*train.frame.to_dict("records"), *evaluation.frame.to_dict("records")]
    assert all([r["channels"], r["height"], r["width"]] == list(made.train.images.shape[1:]) for r in rows)


def test_mlflow_logs_every_frame_as_a_dataset_input(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.create_experiment("datasets", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    data = [d for key, config in BASE.items() for d in _family(key).input_data(config)]
    inputs = []
    for d in data:
        dataset = mlflow.data.from_pandas(d.frame, source=d.source, name=d.name)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, d.context)]))
    client.log_inputs(run_id, inputs)
    logged = client.get_run(run_id).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in logged) == sorted(d.name for d in data)
    assert all(i.dataset.schema and i.dataset.profile for i in logged)


SHIPPED = sorted(
    p.name for p in (ROOT / "sweeps").glob("*.yaml") if yaml.safe_load(p.read_text())["workload"] != "samplers"
)


@pytest.mark.parametrize("sweep", SHIPPED)
def test_a_shipped_sweeps_frames_cost_little(sweep):
    spec = load_sweep(ROOT / "sweeps" / sweep)
    family = get_family(spec.workload)
    family.input_data(spec.config)  # imports its module
    start = time.perf_counter()
    family.input_data(spec.config)
    assert time.perf_counter() - start < 0.1
