"""The Torsional-GFN smoke sweep end to end on a real local Ray: learner actor + energy pool,
MLflow child runs with metrics by split, and the samples Parquet with the issue's columns."""
from __future__ import annotations

import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from orchestrator.spec import load_sweep
from orchestrator.tuner import run_sweep
from tests.conftest import ROOT


def test_torsional_smoke_sweep(ray_cluster, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    spec = load_sweep(ROOT / "sweeps" / "torsional.yaml",
                      [f"storage_path={tmp_path / 'ray_results'}", f"config.cache_dir={tmp_path / 'cache'}",
                       "tune.num_samples=1", "search_space={}"]).smoke()
    _, status = run_sweep(spec, uri)
    assert status == "FINISHED"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("torsional").experiment_id])
    (child,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert child.info.status == "FINISHED"
    for split in ("train", "unseen_structures", "unseen_molecules"):
        assert 0 <= child.data.metrics[f"eval/{split}/jsd"] <= 1
    step = max(m.step for m in client.get_metric_history(child.info.run_id, "eval/jsd"))
    folder = f"eval/step_{step:07d}"
    files = [a.path for a in client.list_artifacts(child.info.run_id, folder)]
    assert any(f.endswith(".png") for f in files)
    table = pq.read_table(client.download_artifacts(child.info.run_id, f"{folder}/samples.parquet", str(tmp_path)))
    assert table.column_names == ["smiles", "local_structure", "torsions", "energy_kcal_mol", "log_pf"]
    assert set(table.column("smiles").to_pylist()) == {"CCC", "COC=O", "COc1ccccc1"}
