"""Autoscaling (slow): Ray's fake multi-node autoscaler (`ray.cluster_utils.AutoscalingCluster`) starts a node of a
worker type that offers a custom accelerator resource the head lacks, a smoke trial that asks for it runs there,
and the node goes away after the idle timeout.

Why a subprocess in namespaces of its own: `AutoscalingCluster.start()` and `.shutdown()` run `ray stop --force`,
which ends every Ray process it can see. The scenario therefore runs in `python tests/test_autoscaling.py`
under `unshare --user --map-root-user --pid --mount-proc --net`: its `ray stop --force` sees only the processes of
its own PID namespace (this cluster's), its ports (6379, 8265, ...) are those of its own network namespace, and
when it exits the kernel ends whatever it left. Other Ray instances on the machine are not touched. Where user
namespaces are not available the test is skipped, unless ORCHESTRATOR_ALLOW_RAY_STOP=1 says that ending every
Ray process on this machine is fine (it then runs without isolation).

Ray's token authentication is on (`ray_token_auth`): the scenario inherits RAY_AUTH_MODE=token and the test's token,
so do the head (`ray start --head`), the nodes the autoscaler adds and the scenario's own client; the scenario checks
that the head refuses requests without the token.

The wheel lacks Ray's `fake_multi_node/example.yaml`, so the config comes from `_config` below."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAD = "ray.head.default"
ACCEL_TYPE = "accel"
IDLE_TIMEOUT_MIN = 0.1  # 6 s: the node goes back soon after the trial ends


def _config(head_resources: dict, worker_node_types: dict, **extra) -> dict:
    """The fake multi-node provider's cluster config (what Ray's missing example.yaml holds)."""
    config = {
        "cluster_name": "fake-autoscaling",
        "max_workers": 2,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {},
        "docker": {},
        "head_node_type": HEAD,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "available_node_types": {
            **copy.deepcopy(worker_node_types),
            HEAD: {"resources": dict(head_resources), "node_config": {}, "max_workers": 0},
        },
    }
    config.update(extra)
    return config


# ------------------------------------------------------------------ the scenario (in its own namespaces)


def scenario(work: Path) -> dict:
    """Start the cluster, run the smoke trial, watch the accel node come and go; returns what happened."""
    import ray
    from mlflow.tracking import MlflowClient
    from ray.cluster_utils import AutoscalingCluster

    from orchestrator.placement import autoscaler, cluster_fit_error
    from orchestrator.spec import load_sweep
    from orchestrator.tracking import NODE_TAG, PARENT_TAG
    from orchestrator.tuner import run_sweep
    from tests.conftest import token_auth_checks

    class Cluster(AutoscalingCluster):
        def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
            return _config(head_resources, worker_node_types, **config_kwargs)

    cluster = Cluster(
        head_resources={"CPU": 1},
        worker_node_types={
            ACCEL_TYPE: {
                "resources": {"CPU": 1, "FakeAccel": 1, "object_store_memory": 10**8},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 1,
            }
        },
    )
    report: dict = {}
    started = time.monotonic()
    cluster.start()
    try:
        context = ray.init(address="auto", configure_logging=False, log_to_driver=False)
        report["token_auth"] = token_auth_checks(
            os.environ["RAY_AUTH_TOKEN"], ray.get_runtime_context().gcs_address, f"http://{context.dashboard_url}"
        )
        alive = lambda: {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        report["nodes_at_start"] = alive()
        spec = load_sweep(
            ROOT / "sweeps" / "samplers.yaml",
            [
                "resources.learner={cpus: 1, custom: {FakeAccel: 1}}",
                "resources.workers.replay_buffer={cpus: 0.5}",
                "tune.num_samples=1",
                f"storage_path={work / 'ray_results'}",
            ],
        ).smoke()
        found = autoscaler()
        report["autoscaler"] = (
            None
            if found is None
            else {"source": found.source, "types": {t.name: t.resources for t in found.node_types}}
        )
        report["fit_error"] = cluster_fit_error(spec)
        uri = f"sqlite:///{work / 'm.db'}"
        report["status"] = run_sweep(spec, uri)[1]
        report["sweep_done_s"] = time.monotonic() - started
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name(spec.mlflow.experiment).experiment_id])
        trials = [r for r in runs if PARENT_TAG in r.data.tags]
        report["trials"] = [
            {
                "status": r.info.status,
                "nodes": {k.removeprefix(NODE_TAG): v for k, v in r.data.tags.items() if k.startswith(NODE_TAG)},
                "steps": [m.step for m in client.get_metric_history(r.info.run_id, "eval/delta_log_z")],
            }
            for r in trials
        ]
        report["nodes_after_sweep"] = alive()
        deadline = time.monotonic() + 180
        while len(alive()) > 1 and time.monotonic() < deadline:
            time.sleep(1)
        report["nodes_at_end"] = alive()
        report["scaled_down_s"] = time.monotonic() - started - report["sweep_done_s"]
        from orchestrator.placement import _autoscaler_status

        report["types_seen"] = sorted(
            set(((_autoscaler_status() or {}).get("autoscaler_report") or {}).get("node_type_mapping", {}).values())
        )
    finally:
        ray.shutdown()
        cluster.shutdown()  # `ray stop --force`: in this PID namespace, only this cluster
    return report


# ------------------------------------------------------------------ the test


def _isolated(command: list[str]) -> list[str] | None:
    """`command` in new user, PID, mount and network namespaces, or None where this machine cannot make them."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run(
        [unshare, "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--net", "true"], capture_output=True
    )
    if probe.returncode != 0:
        return None
    # A new network namespace has only a loopback interface, and it starts down.
    inner = 'ip link set lo up 2>/dev/null || ifconfig lo up; exec "$@"'
    return [
        unshare,
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--mount-proc",
        "--net",
        "--kill-child",
        "sh",
        "-c",
        inner,
        "sh",
        *command,
    ]


@pytest.mark.slow
def test_the_autoscaler_adds_an_accelerator_node_for_a_trial_and_removes_it_when_idle(tmp_path, ray_token_auth):
    work = Path(tempfile.mkdtemp(prefix="as", dir="/tmp"))  # short: Ray's socket paths have a length limit
    command = [sys.executable, str(Path(__file__).resolve()), str(work)]
    isolated = _isolated(command)
    if isolated is None:
        if os.environ.get("ORCHESTRATOR_ALLOW_RAY_STOP") != "1":
            pytest.skip(
                "no user namespaces here to confine `ray stop --force`; ORCHESTRATOR_ALLOW_RAY_STOP=1 runs "
                "it anyway and ends every Ray process on this machine"
            )
        isolated = command
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RAY_TMPDIR": str(work),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    try:
        done = subprocess.run(isolated, env=env, cwd=work, capture_output=True, text=True, timeout=900)
        result = work / "report.json"
        assert done.returncode == 0 and result.exists(), done.stdout[-3000:] + done.stderr[-5000:]
        report = json.loads(result.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(json.dumps(report, indent=1))  # shown with `pytest -s`: timings, nodes, the autoscaler's config
    assert all(report["token_auth"].values()), report["token_auth"]
    (head,) = report["nodes_at_start"]  # the head alone, without the accelerator
    assert "FakeAccel" not in report["nodes_at_start"][head]
    # The fit check read the autoscaler's own config (its process's --autoscaling-config) and let the trial wait.
    assert report["autoscaler"]["types"][ACCEL_TYPE]["FakeAccel"] == 1, report["autoscaler"]
    assert report["fit_error"] is None
    assert report["status"] == "FINISHED"
    (trial,) = report["trials"]
    assert trial["status"] == "FINISHED" and trial["steps"] == [20, 40]
    assert trial["nodes"]["trial"] == head
    assert trial["nodes"]["learner.0"] != head  # on the node the autoscaler added
    added = trial["nodes"]["learner.0"]
    assert added in report["nodes_after_sweep"] and report["nodes_after_sweep"][added]["FakeAccel"] == 1
    assert list(report["nodes_at_end"]) == [head], f"the accel node was not removed: {report['nodes_at_end']}"


if __name__ == "__main__":  # the subprocess: `python tests/test_autoscaling.py WORK_DIR`
    sys.path.insert(0, str(ROOT))
    work_dir = Path(sys.argv[1])
    (work_dir / "report.json").write_text(json.dumps(scenario(work_dir), indent=2, default=str))
