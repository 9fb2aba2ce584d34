"""Trial runtime on a real local Ray: an actor killed mid-trial is recovered from the last
checkpoint, with every step logged once; a sweep also logs to a real `mlflow server` over http."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import ray
from mlflow.tracking import MlflowClient

from orchestrator.placement import ACTOR_NAMESPACE
from orchestrator.spec import load_sweep
from orchestrator.tracking import TRIAL_TAG
from orchestrator.tuner import run_sweep
from tests.conftest import MlflowServer, free_port, run_sweep_with_fault, trial_runs, write_tiny_sweep


def test_killed_learner_is_restarted_and_the_trial_goes_on(ray_cluster, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    spec = load_sweep(write_tiny_sweep(tmp_path, name="recovery", total_iters=200, eval_every=20))
    client = MlflowClient(uri)
    client.search_experiments()  # creates the store now, not racing the sweep's own first call

    def kill_the_learner(run, steps) -> str:
        name = f"{run.data.tags[TRIAL_TAG]}.learner.0"
        ray.kill(ray.get_actor(name, namespace=ACTOR_NAMESPACE), no_restart=False)
        return name

    status, killed = run_sweep_with_fault(spec, uri, client, kill_the_learner, timeout_s=240)
    assert killed, "the learner was never killed"
    assert status == "FINISHED"
    (child,) = trial_runs(client, "recovery")
    assert child.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "eval/delta_log_z")]
    assert steps == list(range(20, 201, 20)), steps
    assert client.get_metric_history(child.info.run_id, "recoveries")[-1].value >= 1


def test_a_crashed_trial_is_failed_in_mlflow_and_the_sweep_goes_on(ray_cluster, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    sweep = write_tiny_sweep(tmp_path, name="crash", total_iters=200, eval_every=20, num_samples=2)
    spec = load_sweep(sweep, ["tune.max_concurrent_trials=1"])
    client = MlflowClient(uri)
    client.search_experiments()
    killed: list[int] = []

    def kill_first_trial_process() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            time.sleep(0.5)
            for result_file in (tmp_path / "ray_results").glob("crash-*/*_00000_*/result.json"):
                lines = result_file.read_text().splitlines()
                if lines:
                    pid = json.loads(lines[0])["pid"]
                    os.kill(pid, signal.SIGKILL)  # the trial's own process dies, taking its actors
                    killed.append(pid)

    killer = threading.Thread(target=kill_first_trial_process, daemon=True)
    killer.start()
    _, status = run_sweep(spec, uri)
    killer.join(timeout=1)
    assert killed, "the first trial was never killed"
    children = sorted(trial_runs(client, "crash"), key=lambda r: r.info.run_name)
    assert [c.info.status for c in children] == ["FAILED", "FINISHED"]
    assert children[0].data.tags.get("orchestrator.error")
    steps = [m.step for m in client.get_metric_history(children[1].info.run_id, "eval/delta_log_z")]
    assert steps == list(range(20, 201, 20))
    assert status == "FINISHED"


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "server", free_port())
    server.start(timeout_s=90)
    yield server.uri
    server.stop()


@pytest.mark.slow  # as tests/test_tracking_server.py's CLI smoke sweep: each starts an `mlflow server`
def test_sweep_logs_to_an_mlflow_server(ray_cluster, tmp_path, mlflow_server):
    spec = load_sweep(write_tiny_sweep(tmp_path, name="served", total_iters=40, eval_every=20, num_samples=2))
    _, status = run_sweep(spec, mlflow_server)
    assert status == "FINISHED"
    client = MlflowClient(mlflow_server)
    children = trial_runs(client, "served")
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(child.info.run_id, "eval/w2")] == [20, 40]
        files = [a.path for a in client.list_artifacts(child.info.run_id, "eval/step_0000040")]
        assert "eval/step_0000040/samples.parquet" in files and "eval/step_0000040/samples.png" in files
