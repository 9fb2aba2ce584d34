"""Sweeps on a multi-node Ray cluster simulated on this machine (`ray.cluster_utils.Cluster`: one process
tree per node, each with its own resources), as on a cloud cluster whose worker types name their hardware.

Nodes: a head with no CPU (the Tune driver is this test process; every trial function runs on the head, see
orchestrator/placement.py), `accel` nodes that offer the custom resource `FakeAccel` (a GPU node type in
cluster/*.yaml offers `A10G` or `L4`), and a `cpu_spot` node. The learner asks for `FakeAccel`, the replay
buffer (the samplers' local-search actor) for `cpu_spot`, so each lands on a node of its kind.

- the smoke sweep runs to completion with its actors on different nodes, as the run's tags say;
- node loss: the learner's node is killed mid-trial; Ray moves the bundle to the other `accel` node
  and restarts the learner there, the trial reloads its last checkpoint and goes on, and MLflow holds every
  evaluation step exactly once.

Each test starts and stops its own cluster (no `ray stop`: only this cluster's processes end), with Ray's token
authentication on (`ray_token_auth`), checked to refuse requests without the token. Both are slow
(`pytest -m slow`): starting the 3-4 nodes takes ~30 s on 2 cores, the smoke sweep ~40 s, the node loss ~65 s."""

from __future__ import annotations

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from orchestrator.spec import load_sweep
from orchestrator.tracking import NODE_TAG
from orchestrator.tuner import run_sweep
from tests.conftest import ROOT, run_sweep_with_fault, token_auth_checks, trial_runs, write_tiny_sweep

# Nodes declared dead 3 s after they stop answering (Ray's default is ~30 s).
FAST_NODE_DEATH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 3,
}
pytestmark = pytest.mark.slow

STORE = 100 * 2**20  # object store per node: small, 4 nodes share this machine's memory
PLACED = [
    "resources.learner={cpus: 1, custom: {FakeAccel: 1}}",
    "resources.workers.replay_buffer={count: 1, cpus: 1, custom: {cpu_spot: 1}}",
]


def _cluster(accel_nodes: int, token: str) -> tuple[Cluster, dict[str, list[str]]]:
    """The nodes start with this process's environment, so with `ray_token_auth`'s token, and this process joins as
    their client with it."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "object_store_memory": STORE,
            "_system_config": FAST_NODE_DEATH,
        },
    )
    kinds: dict[str, list[str]] = {"head": [cluster.head_node.node_id], "accel": [], "cpu_spot": []}
    for _ in range(accel_nodes):
        kinds["accel"].append(
            cluster.add_node(num_cpus=1, resources={"FakeAccel": 1}, object_store_memory=STORE).node_id
        )
    kinds["cpu_spot"].append(cluster.add_node(num_cpus=1, resources={"cpu_spot": 1}, object_store_memory=STORE).node_id)
    cluster.wait_for_nodes()
    checks = token_auth_checks(token, cluster.address)
    assert all(checks.values()), checks
    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    return cluster, kinds


def _cluster_fixture(accel_nodes: int):
    @pytest.fixture
    def fixture(ray_token_auth):
        cluster, kinds = _cluster(accel_nodes=accel_nodes, token=ray_token_auth)
        yield cluster, kinds
        ray.shutdown()
        cluster.shutdown()

    return fixture


two_node_kinds = _cluster_fixture(accel_nodes=1)
spare_accel_node = _cluster_fixture(accel_nodes=2)  # a second accelerator node to restart on


def _steps(client: MlflowClient, run_id: str, metric: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, metric)]


def test_smoke_sweep_places_each_role_on_its_node_type(two_node_kinds, tmp_path):
    cluster, kinds = two_node_kinds
    spec = load_sweep(
        ROOT / "sweeps" / "samplers.yaml", [*PLACED, "tune.num_samples=1", f"storage_path={tmp_path / 'ray_results'}"]
    ).smoke()
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    _, status = run_sweep(spec, uri)
    assert status == "FINISHED"
    client = MlflowClient(uri)
    (run,) = trial_runs(client, spec.mlflow.experiment)
    assert run.info.status == "FINISHED"
    assert _steps(client, run.info.run_id, "eval/delta_log_z") == [20, 40]
    tags = run.data.tags
    assert tags[NODE_TAG + "trial"] == kinds["head"][0]
    assert tags[NODE_TAG + "learner.0"] == kinds["accel"][0]
    assert tags[NODE_TAG + "replay_buffer.0"] == kinds["cpu_spot"][0]


def test_a_lost_node_moves_its_actor_and_the_trial_goes_on_from_its_checkpoint(spare_accel_node, tmp_path):
    cluster, kinds = spare_accel_node
    spec = load_sweep(write_tiny_sweep(tmp_path, name="nodeloss", total_iters=200, eval_every=20), PLACED)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    client.search_experiments()  # creates the store now, not racing the sweep's own first call

    def kill_the_learners_node(run, steps) -> tuple[str, int]:
        """After a report (so a checkpoint): SIGKILL the raylet, workers and store of the learner's node."""
        node_id = run.data.tags[NODE_TAG + "learner.0"]
        cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == node_id), allow_graceful=False)
        return node_id, steps[-1]  # the last step MLflow had when the node was killed

    status, lost = run_sweep_with_fault(spec, uri, client, kill_the_learners_node)
    assert lost, "the learner's node was never killed"
    ((lost_node, last_step),) = lost
    assert lost_node in kinds["accel"] and last_step < 200
    assert status == "FINISHED"
    (run,) = trial_runs(client, "nodeloss")
    assert run.info.status == "FINISHED"
    # Every evaluation once: none lost with the node, none logged again after the restore; the same for the training
    # curve, whose points come every `train_every` iterations.
    for metric in ("eval/delta_log_z", "time_total_s"):
        assert _steps(client, run.info.run_id, metric) == list(range(20, 201, 20)), metric
    every = spec.train_every(spec.config)
    assert _steps(client, run.info.run_id, "train/loss") == list(range(every, 201, every))
    assert client.get_metric_history(run.info.run_id, "recoveries")[-1].value >= 1
    # The learner now runs on the other accel node; the buffer and the trial function did not move.
    tags = client.get_run(run.info.run_id).data.tags
    (spare,) = set(kinds["accel"]) - {lost_node}
    assert tags[NODE_TAG + "learner.0"] == spare
    assert tags[NODE_TAG + "replay_buffer.0"] == kinds["cpu_spot"][0]
    assert tags[NODE_TAG + "trial"] == kinds["head"][0]
