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
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)


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


def write_tiny_sweep(folder: Path, name: str = "tiny", total_iters: int = 100, eval_every: int = 20,
                     num_samples: int = 1) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(TINY_SWEEP.format(name=name, total_iters=total_iters, eval_every=eval_every,
                                      num_samples=num_samples, storage=folder / "ray_results"))
    return path
