"""Durable tracking: MLflow writes wait on disk in an outbox while the store is away, however long, and are sent, in
order and once, when it answers (orchestrator/outbox.py, tracking.py). The queue itself, then a real SQLite store
moved away, then a real `mlflow server` stopped mid-sweep for longer than the retry budget."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from orchestrator.outbox import REJECTED, Later, Outbox
from orchestrator.tracking import RETRY_BUDGET_ENV, STEP_METRIC, SweepTracker, TrialArtifacts
from tests.conftest import ROOT, MlflowServer, free_port, orchestrator_cli, trial_runs, write_tiny_sweep

# ------------------------------------------------------------------ the queue


class Store:
    """A stand-in destination for the queue alone: records what it performed; away while `away` is set."""

    def __init__(self):
        self.performed: list[tuple[dict, list[str]]] = []
        self.away = False
        self.refuse: set[int] = set()

    def perform(self, record: dict, files: Path | None) -> None:
        if self.away:
            raise Later("away")
        if record["n"] in self.refuse:
            raise ValueError(f"record {record['n']} refused")
        self.performed.append((record, sorted(p.name for p in files.iterdir()) if files else []))


def test_records_are_sent_in_order_with_their_files_and_removed(tmp_path):
    outbox, store = Outbox(tmp_path / "box"), Store()
    outbox.put({"n": 1})
    outbox.put({"n": 2, "value": np.float32(0.5), "count": np.int64(3)}, lambda f: (f / "a.txt").write_text("a"))
    outbox.put({"n": 3})
    assert outbox.pending == 3
    assert outbox.send(store.perform) == 0
    assert [(r["n"], files) for r, files in store.performed] == [(1, []), (2, ["a.txt"]), (3, [])]
    assert store.performed[1][0]["value"] == 0.5 and store.performed[1][0]["count"] == 3
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == [".lock"]


def test_a_store_that_is_away_keeps_everything_and_is_not_asked_again_at_once(tmp_path):
    outbox, store = Outbox(tmp_path / "box"), Store()
    store.away = True
    for n in range(3):
        outbox.put({"n": n})
        assert outbox.send(store.perform) == n + 1
    store.away = False
    assert outbox.send(store.perform) == 3  # within the back-off: not tried
    assert store.performed == []
    assert outbox.send(store.perform, force=True) == 0
    assert [r["n"] for r, _ in store.performed] == [0, 1, 2]


def test_a_refused_record_is_kept_aside_with_its_error_and_the_rest_go(tmp_path):
    outbox, store = Outbox(tmp_path / "box"), Store()
    store.refuse = {2}
    for n in (1, 2, 3):
        outbox.put({"n": n}, lambda f: (f / "x").write_text("x"))
    assert outbox.send(store.perform) == 0
    assert [r["n"] for r, _ in store.performed] == [1, 3]
    rejected = tmp_path / "box" / REJECTED
    assert json.loads((rejected / "000000002.json").read_text()) == {"n": 2}
    assert (rejected / "000000002.files" / "x").exists()
    assert "record 2 refused" in (rejected / "000000002.error.txt").read_text()


def test_a_record_whose_commit_a_crash_cut_off_is_not_sent(tmp_path):
    """Files are written before their record; a crash between the two leaves files and no record."""
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "000000001.files").mkdir()
    (tmp_path / "box" / ".000000001.json.tmp").write_text('{"n": ')
    outbox, store = Outbox(tmp_path / "box"), Store()
    assert outbox.pending == 0
    outbox.put({"n": 7})
    assert outbox.send(store.perform) == 0 and store.performed == [({"n": 7}, [])]


def test_a_second_process_that_sends_the_folder_leaves_it_alone(tmp_path):
    outbox, store = Outbox(tmp_path / "box"), Store()
    outbox.put({"n": 1})
    with open(tmp_path / "box" / ".lock", "w") as lock:  # as `orchestrator sync` would hold it
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert outbox.send(store.perform, force=True) == 1 and store.performed == []
    assert outbox.send(store.perform, force=True) == 0


def test_a_new_process_appends_after_what_waits(tmp_path):
    Outbox(tmp_path / "box").put({"n": 1})
    later = Outbox(tmp_path / "box")  # a resumed driver: a new instance on the same folder
    later.put({"n": 2})
    store = Store()
    later.send(store.perform)
    assert [r["n"] for r, _ in store.performed] == [1, 2]


# ------------------------------------------------------------------ a real SQLite store, moved away


def _history(client: MlflowClient, run_id: str, key: str = "loss") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_sweep_logged_while_its_store_is_away_arrives_whole_and_once(tmp_path, monkeypatch):
    """The store's folder is moved away (SQLite cannot open it) before a trial's run is even made: the run, its
    params, metrics, a trial's files and the run's end all wait, return at once (no retry budget spent), and arrive
    when the store is back; a write sent twice (a crash after sending) is stored once."""
    monkeypatch.setenv(RETRY_BUDGET_ENV, "1")
    store, away = tmp_path / "store", tmp_path / "away"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    tracker = SweepTracker(uri, "away", tmp_path / "outbox" / "driver")
    parent = tracker.start_parent("away", {"name": "away"})
    store.rename(away)

    started = time.monotonic()
    run = tracker.trial_run(parent, "t_00000", "lr0.1", {"lr": 0.1})
    for step in (1, 2, 3):
        tracker.log_metrics(run, {"loss": float(step), STEP_METRIC: step / 10}, step=step)
    files = TrialArtifacts(uri, tracker.experiment_id, "t_00000", tmp_path / "outbox" / "trials" / "t_00000")
    files.log_files({"note.txt": lambda path: path.write_text("written while away")}, "eval/step_0000003")
    tracker.end_run(run, "FINISHED")
    assert time.monotonic() - started < 5  # nothing waited for the store
    assert tracker.unsent == 5 and files.tracker.unsent == 1

    away.rename(store)
    assert files.flush() == 1  # the trial's files wait for the run the driver makes
    assert tracker.flush() == 0 and files.flush() == 0
    client = MlflowClient(uri)
    run_id = tracker.run_id(run)
    assert client.get_run(run_id).info.status == "FINISHED" and client.get_run(run_id).data.params == {"lr": "0.1"}
    assert _history(client, run_id) == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert client.download_artifacts(run_id, "eval/step_0000003/note.txt", str(tmp_path / "dl"))

    # The same write performed twice, as after a crash between sending it and removing it.
    record = {"op": "batch", "run": run, "metrics": [["loss", 4.0, 1_700_000_000_000, 4]]}
    tracker._perform(record, None)
    tracker._perform(record, None)
    assert _history(client, run_id)[-1:] == [(4, 4.0)] and len(_history(client, run_id)) == 4


def test_a_write_the_store_refuses_is_set_aside_and_the_rest_arrive(tmp_path):
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "refused", tmp_path / "outbox")
    run = tracker.trial_run(tracker.start_parent("refused", {"name": "refused"}), "t_00000", "t", {})
    started = time.monotonic()
    tracker.log_metrics(run, {"../not a metric name": 1.0}, step=1)
    tracker.log_metrics(run, {"loss": 2.0}, step=2)
    assert time.monotonic() - started < 5 and tracker.unsent == 0
    assert _history(tracker.client, tracker.run_id(run)) == [(2, 2.0)]
    (refused,) = (tmp_path / "outbox" / REJECTED).glob("*.error.txt")
    assert "not a metric name" in refused.read_text()


# ------------------------------------------------------------------ a real server stopped mid-sweep


def _tune_steps(sweep_folder: Path) -> dict[str, list[int]]:
    """Each trial's reported steps, from Tune's own result.json (what MLflow must have, all of it)."""
    steps = {}
    for result in sweep_folder.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        steps[rows[0]["trial_id"]] = sorted(row["step"] for row in rows)
    return steps


@pytest.mark.slow
def test_a_sweep_outlives_an_mlflow_server_stopped_for_longer_than_the_retry_budget(tmp_path):
    """`orchestrator run` against a real `mlflow server` that is stopped once the trials have logged and stays down
    to the sweep's end (the budget is 3 s): the sweep finishes with exit 0 and says what waits; `orchestrator sync`
    after the restart sends it, and every report Tune saw is in MLflow once, with its files, and every run ended."""
    server = MlflowServer(tmp_path / "server", free_port())
    server.start()
    sweep = write_tiny_sweep(tmp_path, name="outage", total_iters=200, eval_every=20, num_samples=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), RETRY_BUDGET_ENV: "3"}
    run = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(sweep), "--tracking-uri", server.uri],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        client = MlflowClient(server.uri)
        deadline = time.monotonic() + 240
        while not (len(runs := trial_runs(client, "outage")) == 2 and all(r.data.metrics for r in runs)):
            assert run.poll() is None and time.monotonic() < deadline, "the trials never logged"
            time.sleep(1)
        server.stop()
        down_since = time.monotonic()
        out, err = run.communicate(timeout=400)
        assert run.returncode == 0, out[-3000:] + err[-3000:]
        assert time.monotonic() - down_since > 3 * 3
        assert "writes wait in" in err and "python -m orchestrator sync" in err

        server.start()
        (sweep_folder,) = (tmp_path / "ray_results").glob("outage-*")
        synced = orchestrator_cli("sync", str(sweep_folder), cwd=tmp_path, timeout=300)
        assert synced.returncode == 0 and ", 0 still wait" in synced.stdout, synced.stdout + synced.stderr

        runs = trial_runs(client, "outage")
        assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
        (parent,) = [r for r in client.search_runs([runs[0].info.experiment_id]) if r.info.run_id not in
                     {t.info.run_id for t in runs}]  # fmt: skip
        assert parent.info.status == "FINISHED" and parent.data.tags["orchestrator.best_trial"]
        assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"trials.md", "trials.parquet"}
        tune_steps = _tune_steps(sweep_folder)
        assert len(tune_steps) == 2
        for trial in runs:
            steps = tune_steps[trial.data.tags["orchestrator.trial_id"]]
            assert len(steps) == 10
            for key in ("eval/delta_log_z_rw", STEP_METRIC):
                logged = [m.step for m in client.get_metric_history(trial.info.run_id, key)]
                assert sorted(logged) == steps, (key, logged, steps)
            folders = [a.path for a in client.list_artifacts(trial.info.run_id, "eval")]
            assert folders == [f"eval/step_{step:07d}" for step in steps]
        assert not list((sweep_folder / "mlflow-outbox").rglob("0*.json"))
    finally:
        run.kill()
        server.stop()
