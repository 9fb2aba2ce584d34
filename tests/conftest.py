"""Shared fixtures: a real local Ray per test module, real MLflow stores in temp folders."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# In-process training tests use one thread: two cores shared by torch's threads and Ray thrash.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Ray's sockets live under RAY_TMPDIR; a short path stays under the AF_UNIX length limit.
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rt", dir="/tmp"))

ROOT = Path(__file__).resolve().parents[1]

LONGEST_MODULES = (
    "test_outsourced_family",
    "test_rtb_family",
    "test_cli",
    "test_faults",
    "test_torsional_sample",
    "test_trial_runtime",
    "test_outsourced_learner",
    "test_actor_arguments",
)
"""The modules of `make test` with the longest end-to-end sweeps (3-8 minutes each), run first: `make test` hands
whole modules to 2 pytest-xdist workers in collection order, and a long module left to the end keeps one worker
busy while the other idles."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))  # stable: file order


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray with 2 CPUs for the whole module (starting one costs ~4 s)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_token_auth():
    """Ray's token authentication on, as on a cluster, for every Ray process and client the test starts (heads,
    nodes, `ray job submit`, subprocesses): RAY_AUTH_MODE=token and a token of the test's own in RAY_AUTH_TOKEN,
    set in this process's environment, which they inherit. Yields the token.

    Stated rather than left to Ray's default: Ray 2.60 turns token authentication on by default only for a local
    `ray.init()`; `ray start` turns it on only where ~/.ray/auth_token exists, and `ray.cluster_utils.Cluster` never
    does. The token is not written to ~/.ray/auth_token: a clean machine needs none there, and other Rays on this
    machine keep theirs."""
    # Ray's helper for its own tests: once a Ray ran in this process (an earlier test's), its config and token are
    # cached here; both are read again from the environment now, and after the test.
    from ray._private.authentication_test_utils import reset_auth_token_state

    token = secrets.token_hex(32)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    saved = {name: os.environ.get(name) for name in auth}
    os.environ.update(auth)
    reset_auth_token_state()
    yield token
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    reset_auth_token_state()


def token_auth_checks(token: str, gcs_address: str, job_api: str | None = None) -> dict[str, bool]:
    """Whether a Ray head enforces token authentication: its GCS (and, given its dashboard's address, the job API
    that `ray job submit` uses) refuses a request without a token or with another one and answers one with `token`.
    {check: passed}. Raw gRPC and HTTP requests, not Ray's client, which would send this process's own token."""
    import urllib.error
    import urllib.request

    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    credentials = {"no token": None, "another token": secrets.token_hex(32), "the token": token}
    checks = {}
    with grpc.insecure_channel(gcs_address) as channel:
        gcs = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        for name, sent in credentials.items():
            metadata = None if sent is None else [("authorization", f"Bearer {sent}")]
            try:
                gcs.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), metadata=metadata, timeout=30)
                answered = True
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
                answered = False
            checks[f"GCS {'answers' if sent == token else 'refuses'} {name}"] = answered == (sent == token)
    if job_api is not None:
        for name, sent in credentials.items():
            headers = {} if sent is None else {"Authorization": f"Bearer {sent}"}
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{job_api}/api/jobs/", headers=headers)) as answer:
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            checks[f"job API {'answers' if sent == token else 'refuses'} {name}"] = (status == 200) == (sent == token)
    return checks


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
                    str(Path(sys.executable).with_name("mlflow")),
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
        try:
            wait_until_up(self.uri, self.process, timeout_s)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"{error}: {(self.folder / 'server.log').read_text()[-2000:]}") from None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def family_driver(name: str, workload: str, config: dict, metric: str, mode: str = "min", resources: dict | None = None,
                  seed: int = 0, smoke: bool = False, trial_id: str | None = None):  # fmt: skip
    """The trial driver of a one-trial sweep of `workload` with `config` (on the family's smoke config when
    `smoke`), its actors started on the running Ray; trial id `<name>_00000` unless given."""
    from orchestrator.placement import TrialContext
    from orchestrator.registry import get_family
    from orchestrator.spec import SweepSpec

    sweep = {"name": name, "workload": workload, "config": config, "tune": {"metric": metric, "mode": mode}}
    spec = SweepSpec.from_dict({**sweep, "resources": resources} if resources else sweep)
    trial_config = spec.config.smoke().model_copy(update=config) if smoke else spec.config
    context = TrialContext(spec=spec, config=trial_config, seed=seed, trial_id=trial_id or f"{name}_00000")
    return get_family(workload).load_driver()(context)


def one_report(driver) -> tuple[dict, dict]:
    """(metrics, artifact writers) of the driver's next report; its actors stopped afterwards, whatever happens."""
    from orchestrator.trial import stop_actors

    try:
        return driver.advance()
    finally:
        stop_actors(driver)


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Until the MLflow server (or UI) at `url` answers its health check; RuntimeError when `process` exits or
    `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the MLflow server at {url} exited")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the MLflow server at {url} did not answer within {timeout_s:.0f} s")


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
