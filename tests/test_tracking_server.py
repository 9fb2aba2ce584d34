"""Shared tracking: the tracking URI's precedence and a smoke sweep against a real `mlflow server` on loopback
(a store that is away: tests/test_outbox.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import _tracking_uri
from orchestrator.spec import load_sweep
from orchestrator.tracking import STEP_METRIC
from tests.conftest import ROOT, orchestrator_cli

MLFLOW = Path(sys.executable).with_name("mlflow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite store and proxied artifacts in `folder`, in its own process
    group (stopped with it, children included); `start` again reuses the port and the store."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self, timeout_s: float = 120.0) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(self.folder / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(MLFLOW),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    f"sqlite:///{self.folder / 'mlflow.db'}",
                    "--artifacts-destination",
                    str(self.folder / "artifacts"),
                ],
                cwd=self.folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.folder / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not up after {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


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
