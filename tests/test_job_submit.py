"""`ray job submit` against a local `ray start --head`, as on a cluster, with Ray's token authentication on both
sides (slow: run with -m slow)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.spec import load_sweep
from tests.conftest import ROOT, token_auth_checks

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "sweep, experiment", [("sweeps/torsional.yaml", "torsional"), ("sweeps/samplers.yaml", "samplers-25gmm")]
)
def test_smoke_sweep_through_ray_job_submit(tmp_path, ray_token_auth, sweep, experiment):
    bin_dir = Path(sys.executable).parent
    ray_tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    # The head and `ray job submit` both get this environment, so both RAY_AUTH_MODE=token and the test's token
    # (`ray_token_auth`): the submission can only succeed if the client sends the token the head asks for.
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_TMPDIR": ray_tmp}
    gcs_port, dashboard_port = _free_port(), _free_port()
    # --block keeps the head in this process group: terminating it stops only this head, not
    # other Ray instances on the machine (as `ray stop` would).
    head = subprocess.Popen(
        [
            str(bin_dir / "ray"),
            "start",
            "--head",
            "--block",
            "--num-cpus",
            "2",
            "--port",
            str(gcs_port),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard_port),
            # The agents' default ports collide with any other Ray on this machine (a sweep running beside the tests).
            *(
                f"--{option}={_free_port()}"
                for option in (
                    "dashboard-agent-listen-port",
                    "dashboard-agent-grpc-port",
                    "runtime-env-agent-port",
                    "metrics-export-port",
                    "ray-client-server-port",
                )
            ),
        ],
        env=env,
        stdout=(tmp_path / "head.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        address = f"http://127.0.0.1:{dashboard_port}"
        db = tmp_path / "m.db"
        command = [
            str(bin_dir / "ray"),
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            str(ROOT),
            "--",
            "python",
            "-m",
            "orchestrator",
            "run",
            sweep,
            "--smoke",
            "--tracking-uri",
            f"sqlite:///{db}",
        ]
        deadline = time.monotonic() + 180
        while True:  # the job server and its agent need a while after the head starts
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            if result.returncode == 0 or time.monotonic() > deadline or "succeeded" in result.stdout:
                break
            output = result.stdout + result.stderr
            if "Connection refused" not in output and "No available agent" not in output:
                break
            time.sleep(3)
        assert result.returncode == 0, (
            result.stdout[-3000:] + result.stderr[-3000:] + (tmp_path / "head.log").read_text()[-2000:]
        )
        # The head enforced the token: its GCS and job API refuse a client without it.
        checks = token_auth_checks(ray_token_auth, f"127.0.0.1:{gcs_port}", address)
        assert all(checks.values()), checks
        client = MlflowClient(f"sqlite:///{db}")
        runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        expected = load_sweep(ROOT / sweep).smoke().trial_count_hint()
        assert len(children) == expected and all(r.info.status == "FINISHED" for r in children)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
