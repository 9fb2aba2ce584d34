"""Shared tracking: the tracking URI's precedence, a smoke sweep against a real `mlflow server` on loopback,
and logging that rides out a store that is briefly unreachable (a real server stopped and restarted on
its port, a real SQLite store whose folder is moved away), with no metric lost or logged twice."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import _tracking_uri
from orchestrator.errors import OrchestratorError
from orchestrator.spec import load_sweep
from orchestrator.tracking import RETRY_BUDGET_ENV, STEP_METRIC, SweepTracker, TrialArtifacts
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


# ------------------------------------------------------------------ a store that is briefly unreachable


def _loss_history(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))


def test_metrics_wait_while_the_store_is_unreachable_and_are_not_lost(tmp_path, monkeypatch):
    """A real SQLite store whose folder is moved away cannot be written. Within the retry budget a report
    waits for it; past the budget the report returns, its metrics wait and go out with the next one."""
    store, away = tmp_path / "store", tmp_path / "away"
    store.mkdir()
    tracker = SweepTracker(f"sqlite:///{store / 'mlflow.db'}", "unreachable")
    run_id = tracker.trial_run(tracker.start_parent("unreachable", {"name": "unreachable"}), "t_0", "t_0", {"lr": 0.1})
    tracker.log_metrics(run_id, {"loss": 1.0, STEP_METRIC: 0.1}, step=1)

    monkeypatch.setenv(RETRY_BUDGET_ENV, "1.5")
    store.rename(away)
    started = time.monotonic()
    tracker.log_metrics(run_id, {"loss": 2.0, STEP_METRIC: 0.2}, step=2)  # past the budget: does not raise
    assert 1.5 <= time.monotonic() - started < 10
    assert tracker.unsent == 1
    away.rename(store)
    tracker.log_metrics(run_id, {"loss": 3.0, STEP_METRIC: 0.3}, step=3)
    assert tracker.unsent == 0

    monkeypatch.setenv(RETRY_BUDGET_ENV, "60")
    store.rename(away)
    back = threading.Timer(1.0, away.rename, args=(store,))
    back.start()
    started = time.monotonic()
    tracker.log_metrics(run_id, {"loss": 4.0, STEP_METRIC: 0.4}, step=4)  # within the budget: waits, then logs
    back.join()
    assert 1.0 <= time.monotonic() - started < 30 and tracker.unsent == 0
    tracker.end_run(run_id, "FINISHED")

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    assert _loss_history(client, run_id) == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_rejected_batch_fails_at_once_and_does_not_block_the_rest(tmp_path):
    """A request the store refuses (here an invalid metric name) is not retried, and is not kept either."""
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "rejected")
    run_id = tracker.trial_run(tracker.start_parent("rejected", {"name": "rejected"}), "t_0", "t_0", {})
    started = time.monotonic()
    with pytest.raises(OrchestratorError, match="logging metrics"):
        tracker.log_metrics(run_id, {"../not a metric name": 1.0}, step=1)
    assert time.monotonic() - started < 5 and tracker.unsent == 0
    tracker.log_metrics(run_id, {"loss": 2.0}, step=2)
    assert _loss_history(tracker.client, run_id) == [(2, 2.0)]


@pytest.mark.slow
def test_logging_rides_out_a_server_restart(tmp_path, monkeypatch):
    """A real `mlflow server`, stopped and started again on its port: the driver's metrics and a trial's
    artifacts wait for it, nothing fails, and every step is in the store exactly once."""
    server = MlflowServer(tmp_path / "server", free_port())
    server.start()
    try:
        tracker = SweepTracker(server.uri, "restart")
        run_id = tracker.trial_run(tracker.start_parent("restart", {"name": "restart"}), "t_0", "t_0", {"lr": 0.1})
        tracker.log_metrics(run_id, {"loss": 1.0, STEP_METRIC: 0.1}, step=1)

        # Down for longer than the retry budget: the report returns, its metrics wait for the next one.
        monkeypatch.setenv(RETRY_BUDGET_ENV, "2")
        server.stop()
        tracker.log_metrics(run_id, {"loss": 2.0, STEP_METRIC: 0.2}, step=2)
        assert tracker.unsent == 1
        server.start()
        tracker.log_metrics(run_id, {"loss": 3.0, STEP_METRIC: 0.3}, step=3)
        assert tracker.unsent == 0

        # Down while a report and a trial's artifact upload are made: both wait for the restart, then land.
        monkeypatch.setenv(RETRY_BUDGET_ENV, "120")
        server.stop()
        restart = threading.Timer(3.0, server.start)
        restart.start()
        uploaded: list[BaseException | None] = []

        def upload() -> None:
            try:
                TrialArtifacts(server.uri, tracker.experiment_id, "t_0").log_files(
                    {"note.txt": lambda path: path.write_text("logged during a restart")}, "eval/step_0000004"
                )
                uploaded.append(None)
            except BaseException as error:  # reported by the assert below
                uploaded.append(error)

        uploader = threading.Thread(target=upload)
        uploader.start()
        started = time.monotonic()
        tracker.log_metrics(run_id, {"loss": 4.0, STEP_METRIC: 0.4}, step=4)
        waited = time.monotonic() - started
        restart.join()
        uploader.join(timeout=150)
        assert waited >= 3.0 and tracker.unsent == 0
        assert uploaded == [None]
        tracker.end_run(run_id, "FINISHED")

        client = MlflowClient(server.uri)
        assert _loss_history(client, run_id) == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
        assert client.get_run(run_id).info.status == "FINISHED"
        assert [a.path for a in client.list_artifacts(run_id, "eval/step_0000004")] == ["eval/step_0000004/note.txt"]
    finally:
        server.stop()


# ------------------------------------------------------------------ a sweep against a tracking server


@pytest.mark.slow
def test_smoke_sweep_logs_to_an_mlflow_server(tmp_path, mlflow_server):
    """`orchestrator run --tracking-uri http://...`: the sweep's parent run, its trials' runs, their metrics
    by step and their artifacts (uploaded by the trials through the server) are in the server's store."""
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
