"""Shared fixtures: a real local Ray per test module, real MLflow stores in temp folders."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# In-process training tests use one thread: two cores shared by torch's threads and Ray thrash.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Ray's sockets live under RAY_TMPDIR; a short path stays under the AF_UNIX length limit.
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rt", dir="/tmp"))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray with 2 CPUs for the whole module (starting one costs ~4 s)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def orchestrator_cli(*args: str, cwd: Path, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """`python -m orchestrator ...` as a user runs it, in its own process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def smoke_run(sweep: str, folder: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m orchestrator run sweeps/<sweep> --smoke` with its MLflow store (`folder/m.db`) and Tune's folder in
    `folder`, and `--set` for each override."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    return orchestrator_cli("run", str(ROOT / "sweeps" / sweep), "--smoke", "--tracking-uri",
                            f"sqlite:///{folder / 'm.db'}", "--set", f"storage_path={folder / 'ray_results'}", *sets,
                            cwd=folder)  # fmt: skip


TINY_SWEEP = """
name: {name}
workload: samplers
seed: 0
config:
  num_steps: 20
  batch_size: 64
  eval_samples: 200
  total_iters: {total_iters}
  eval_every: {eval_every}
search_space:
  lr_policy: {{choice: [1.0e-3]}}
tune:
  num_samples: {num_samples}
  metric: eval/delta_log_z_rw
  mode: min
  max_concurrent_trials: 2
resources:
  learner: {{cpus: 0.75}}
  workers:
    replay_buffer: {{count: 1, cpus: 0.25}}
storage_path: {storage}
"""


def write_tiny_sweep(
    folder: Path, name: str = "tiny", total_iters: int = 100, eval_every: int = 20, num_samples: int = 1
) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        TINY_SWEEP.format(
            name=name,
            total_iters=total_iters,
            eval_every=eval_every,
            num_samples=num_samples,
            storage=folder / "ray_results",
        )
    )
    return path


def trial_runs(client, experiment: str) -> list:
    """The MLflow runs of a sweep's trials (children of its parent run); [] before the experiment exists."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [
        r for r in client.search_runs([found.experiment_id], max_results=100) if "mlflow.parentRunId" in r.data.tags
    ]


def run_sweep_with_fault(spec, tracking_uri: str, client, fault, timeout_s: float = 300) -> tuple[str, list]:
    """Run the sweep while a thread waits for the first trial with a reported (so checkpointed) evaluation and
    calls fault(run, steps) on it once: (the parent run's status, [what fault returned], empty if it never ran)."""
    import threading
    import time

    from orchestrator.tuner import run_sweep

    struck: list = []

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
            for run in trial_runs(client, spec.mlflow.experiment):
                steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval/delta_log_z")]
                if steps:
                    struck.append(fault(run, steps))
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status = run_sweep(spec, tracking_uri)
    watcher.join(timeout=1)
    return status, struck
