"""The outsourced family through the orchestrator: `sweeps/outsourced.yaml --smoke` on a local Ray with an MLflow
store, and bad input refused before the sweep starts."""

from __future__ import annotations

import math

import mlflow
import pandas as pd

from tests.conftest import ROOT, orchestrator_cli, smoke_run


def test_smoke_sweep_logs_each_trials_data_space_metrics_and_artifacts(tmp_path):
    result = smoke_run("outsourced.yaml", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.get_experiment_by_name("outsourced")
    trials = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 2 and all(run.info.status == "FINISHED" for run in trials)
    last = "eval/step_0000020"
    for run in trials:
        m = run.data.metrics
        for name in ("eval/tv_to_exact", "eval/w2_data", "eval/mean_log_r", "eval/log_z_mc", "eval/delta_log_z"):
            assert math.isfinite(m[name]), name
        assert 0 <= m["eval/tv_to_exact"] <= 1
        files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, last)}
        assert {"samples.parquet", "data_samples.png", "noise_samples.png", "mode_masses.json"} <= files, files
    samples = pd.read_parquet(client.download_artifacts(trials[0].info.run_id, f"{last}/samples.parquet"))
    assert samples.shape == (200, 2)  # the smoke's 200 noise-space samples


def test_bad_beta_and_unknown_keys_are_refused_at_validation(tmp_path):
    sweep = ROOT / "sweeps" / "outsourced.yaml"
    for override, key in (("config.beta=0", "config.beta"), ("config.sampler.num_stepz=5", "num_stepz")):
        result = orchestrator_cli("validate", str(sweep), "--set", override, cwd=tmp_path, timeout=60)
        assert result.returncode == 2 and key in result.stderr, result.stderr
