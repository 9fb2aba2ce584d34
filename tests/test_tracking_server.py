"""Shared tracking: the tracking URI's precedence and a smoke sweep against a real `mlflow server` on loopback
(a store that is away: tests/test_outbox.py)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import _tracking_uri
from orchestrator.spec import load_sweep
from orchestrator.tracking import STEP_METRIC
from tests.conftest import ROOT, MlflowServer, free_port, orchestrator_cli


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "server", free_port())
    server.start()
    yield server
    server.stop()


# ------------------------------------------------------------------ where the tracking URI comes from


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    """--tracking-uri, else the sweep's mlflow.tracking_uri, else MLFLOW_TRACKING_URI, else ./mlflow.db."""
    plain = load_sweep(ROOT / "sweeps" / "samplers.yaml", [])
    pinned = load_sweep(ROOT / "sweeps" / "samplers.yaml", ["mlflow.tracking_uri=http://sweep:5000"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _tracking_uri(None, plain) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert _tracking_uri(None, plain) == "http://env:5000"
    assert _tracking_uri(None, pinned) == "http://sweep:5000"
    assert _tracking_uri("http://cli:5000", pinned) == "http://cli:5000"


# ------------------------------------------------------------------ a sweep against a tracking server


@pytest.mark.slow
def test_smoke_sweep_logs_to_an_mlflow_server(tmp_path, mlflow_server, ray_token_auth):
    """`orchestrator run --tracking-uri http://...`: the sweep's parent run, its trials' runs, their metrics
    by step and their artifacts (uploaded by the trials through the server) are in the server's store. Its local
    Ray runs with token authentication on (`ray_token_auth`), as on a cluster."""
    result = orchestrator_cli(
        "run",
        str(ROOT / "sweeps" / "samplers.yaml"),
        "--smoke",
        "--tracking-uri",
        mlflow_server.uri,
        "--set",
        f"storage_path={tmp_path / 'ray_results'}",
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"Open the MLflow UI at {mlflow_server.uri}" in result.stdout
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("samplers-25gmm")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED"
        assert "config.lr_policy" in child.data.params
        for metric in ("eval/delta_log_z_rw", STEP_METRIC):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, metric)]
            assert steps and len(steps) == len(set(steps)), (metric, steps)
        evaluations = client.list_artifacts(child.info.run_id, "eval")
        assert evaluations and client.list_artifacts(child.info.run_id, evaluations[-1].path)
    # The store is the server's own SQLite file; nothing was written beside the sweep.
    assert (mlflow_server.folder / "mlflow.db").exists() and not (tmp_path / "mlflow.db").exists()
