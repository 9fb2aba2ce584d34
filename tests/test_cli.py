"""The command line as a user runs it: validate, a smoke sweep end to end, resume after an interrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, orchestrator_cli, smoke_run, write_tiny_sweep


def _runs(db: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{db}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def test_validate_good_and_bad_files(tmp_path):
    good = orchestrator_cli("validate", *map(str, sorted((ROOT / "sweeps").glob("*.yaml"))), cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "sweeps" / "samplers.yaml")
        .read_text()
        .replace("grace_period", "x")
        .replace("num_samples: 2", "num_samples: -3")
    )
    result = orchestrator_cli("validate", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "tune.num_samples" in result.stderr and "bad.yaml" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_run_with_a_bad_override_fails_cleanly(tmp_path):
    result = orchestrator_cli("run", str(ROOT / "sweeps" / "samplers.yaml"), "--set", "config.loss=adam", cwd=tmp_path)
    assert result.returncode == 2
    assert "config.loss" in result.stderr and "Traceback" not in result.stderr


def test_smoke_sweep_end_to_end(tmp_path):
    db = tmp_path / "m.db"
    result = smoke_run("samplers.yaml", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FINISHED" in result.stdout and "mlflow ui" in result.stdout
    client, parents, children = _runs(db, "samplers-25gmm")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "eval/delta_log_z")
        assert [m.step for m in history] == [20, 40]
        assert "config.lr_policy" in child.data.params
        images = [
            a.path
            for step in client.list_artifacts(child.info.run_id, "eval")
            for a in client.list_artifacts(child.info.run_id, step.path)
            if a.path.endswith(".png")
        ]
        assert images, "no figure logged"
    report = orchestrator_cli("report", "samplers-25gmm", "--tracking-uri", f"sqlite:///{db}", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    for child in children:
        assert child.info.run_name in report.stdout
    assert "best eval/delta_log_z_rw" in report.stdout


@pytest.mark.slow
def test_benchmark_sweep_smoke_then_results_table(tmp_path):
    """Variant names travel through Tune and MLflow (param names may not contain '+'), and back into the table."""
    db = tmp_path / "m.db"
    result = smoke_run("samplers_benchmark.yaml", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _, parents, children = _runs(db, "samplers-benchmark")
    assert len(parents) == 1 and len(children) == 2
    assert all(child.info.status == "FINISHED" for child in children)
    methods = {child.data.params["sampled.variants.method"] for child in children}
    table = orchestrator_cli(
        "report",
        "samplers-benchmark",
        "--tracking-uri",
        f"sqlite:///{db}",
        "--table",
        "--markdown",
        str(tmp_path / "table.md"),
        cwd=tmp_path,
    )
    assert table.returncode == 0, table.stderr
    assert all(method in table.stdout for method in methods) and "paper" in table.stdout
    assert (tmp_path / "table.md").read_text().startswith("| method | seeds |")


def test_resume_continues_the_same_runs(tmp_path):
    db = tmp_path / "m.db"
    sweep = write_tiny_sweep(tmp_path, name="resumable", total_iters=300, eval_every=20, num_samples=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "run.log").open("w+")  # a file, not a pipe: nobody reads it while Ray writes
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(sweep), "--tracking-uri", f"sqlite:///{db}"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # Interrupt once the trial has logged its first evaluations.
    deadline = time.monotonic() + 180
    steps: list[int] = []
    while time.monotonic() < deadline and len(steps) < 2:
        time.sleep(1.0)
        # Open the store only after the run created it: two processes migrating one SQLite file collide.
        if "parent run" in (tmp_path / "run.log").read_text():
            try:
                client, _, children = _runs(db, "resumable")
            except AssertionError:
                continue
            if children:
                steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "eval/delta_log_z")]
    assert len(steps) >= 2, "the sweep never reported"
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    output = (tmp_path / "run.log").read_text()
    assert process.returncode == 130, output[-3000:]
    assert "resume" in output
    assert "Tuner.restore" not in output  # our command only, not Tune's hint beside it
    progress = [line for line in output.splitlines() if "trials:" in line]
    assert "trials: 0 done" in progress[-1] and "1 stopped" in progress[-1], progress[-1]  # not "1 done"
    client, parents, children = _runs(db, "resumable")
    assert len(children) == 1 and children[0].info.status == "KILLED"
    run_id = children[0].info.run_id
    interrupted_steps = [m.step for m in client.get_metric_history(run_id, "eval/delta_log_z")]
    assert interrupted_steps[-1] < 300

    resumed = orchestrator_cli("resume", "resumable", "--storage-path", str(tmp_path / "ray_results"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    client, parents, children = _runs(db, "resumable")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert [c.info.run_id for c in children] == [run_id]
    assert children[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "eval/delta_log_z")]
    assert steps == list(range(20, 301, 20)), steps  # every step once: none lost, none logged twice
