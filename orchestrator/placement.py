"""Where a trial's actors go: one bundle per actor, inside the trial's own placement group.

Bundle order (see `trial_bundles`): the trial function's own bundle, the learner, then each worker
role's `count` actors in the order the workload declares its roles.

The trial function's bundle holds no CPU, only a sliver of the head node's own resource
(`node:__internal_head__`): every trial function runs on the head, whatever node its actors land on.
That is where the Tune driver and the MLflow server run, so trials write their artifacts to a store
that need not be reachable from other nodes (a SQLite file, or an `mlflow server` on the head's
loopback), Tune's storage may be the head's disk, and losing a worker node never loses a trial's
coordinator: only actors, which Ray restarts elsewhere (see `wait_until_alive`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from orchestrator.registry import get_family
from orchestrator.spec import RoleResources, SweepSpec

log = logging.getLogger(__name__)

ACTOR_NAMESPACE = "orchestrator"
# What a trial recovers from (see orchestrator/trial.py): an actor that died or cannot be reached, and,
# when a node is lost, the objects that lived on it (a batch an actor returned, on its way to another).
ACTOR_ERRORS = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.ObjectLostError)

HEAD_RESOURCE = "node:__internal_head__"
"""A resource only the head node has (1 of it), in `ray.cluster_resources()` of every Ray cluster."""
TRIAL_BUNDLE = {HEAD_RESOURCE: 0.001}
"""The trial function's bundle: on the head node, no CPU (it only coordinates); up to 1,000 trials at once."""


def _bundle(resources: RoleResources) -> dict[str, float]:
    bundle = {"CPU": resources.cpus}
    if resources.gpus:
        bundle["GPU"] = resources.gpus
    bundle.update(resources.custom)
    return bundle


def role_layout(spec: SweepSpec, config: Any = None) -> list[tuple[str, int, RoleResources]]:
    """[(role, index within role, resources)] in bundle order, learner first: of a trial of `config` (the roles
    its family says it starts, `Family.trial_roles`), or of any trial (None: every role the sweep names)."""
    family = get_family(spec.workload)
    started = None if config is None else family.roles_of(config)
    layout = [("learner", 0, spec.resources.learner)]
    for role in family.worker_roles:
        resources = spec.resources.workers.get(role)  # None: an optional role the sweep does not name
        if started is None or role in started:
            layout += [(role, i, resources) for i in range(resources.count if resources else 0)]
    return layout


def trial_bundles(spec: SweepSpec, config: Any = None) -> list[dict[str, float]]:
    """The trial's placement group: the trial function's bundle on the head, then one bundle per actor (of a trial
    of `config`, or of any trial: `role_layout`)."""
    return [dict(TRIAL_BUNDLE)] + [_bundle(resources) for _, _, resources in role_layout(spec, config)]


# ---------------------------------------------------------------- does one trial fit the cluster?


@dataclass
class NodeType:
    """A kind of node the autoscaler can start: its resources and how many of it at most (-1: no limit)."""

    name: str
    resources: dict[str, float]
    max_count: int


@dataclass
class Autoscaler:
    """What the cluster's autoscaler can add, and where that was read."""

    node_types: list[NodeType]
    source: str


AUTOSCALER_STATUS_KEY = "__autoscaling_status"
"""Ray's internal-KV key where a running autoscaler (v1) publishes its status, `monitor_pid` included."""
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
"""Where Ray's cluster launcher writes the autoscaler's config on the head (Ray Tune looks for it too)."""


def _types_from_config(config: dict[str, Any]) -> list[NodeType]:
    """The worker node types of a cluster-launcher (autoscaler) config."""
    head = config.get("head_node_type")
    types = []
    for name, node_type in (config.get("available_node_types") or {}).items():
        if name == head:
            continue
        count = node_type.get("max_workers", config.get("max_workers", 0))
        types.append(NodeType(name, {k: float(v) for k, v in (node_type.get("resources") or {}).items()}, int(count)))
    return types


def _read_config(path: str | Path) -> dict[str, Any] | None:
    import yaml

    try:
        text = Path(path).expanduser().read_text()
    except OSError:
        return None
    try:
        config = yaml.safe_load(text)  # the launcher writes JSON or YAML: YAML reads both
    except yaml.YAMLError:
        return None
    return config if isinstance(config, dict) and "available_node_types" in config else None


def _gcs_cluster_config() -> list[NodeType] | None:
    """Node groups that an autoscaler reported to the GCS (`ClusterConfig`, as Ray Data reads it)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # a private API: absent or changed means "not known"
        return None
    if config is None or not config.node_group_configs:
        return None
    return [
        NodeType(group.name, {k: float(v) for k, v in group.resources.items()}, int(group.max_count))
        for group in config.node_group_configs
    ]


def _autoscaler_status() -> dict[str, Any] | None:
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return None
    raw = _internal_kv_get(AUTOSCALER_STATUS_KEY)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _autoscaling(status: dict[str, Any] | None) -> bool:
    """Whether an autoscaler that can add nodes runs. A plain `ray start --head` or `ray.init()` runs one too,
    read-only: its report names each node's type `node_<node id>`; the launcher's, KubeRay's and the fake
    multi-node provider's name the types of their configs."""
    if _autoscaler_v2():
        return True
    mapping = ((status or {}).get("autoscaler_report") or {}).get("node_type_mapping") or {}
    return any(node_type != f"node_{node_id}" for node_id, node_type in mapping.items())


def _autoscaler_v2() -> bool:
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        return is_autoscaler_v2(fetch_from_server=True)
    except Exception:
        return False


def _monitor_config_paths(status: dict[str, Any] | None) -> list[str]:
    """The `--autoscaling-config` of this cluster's autoscaler process, when it runs on this machine (a job's
    driver runs on the head, as the autoscaler does): the process the autoscaler names in its status, else any
    autoscaler process started for this cluster's GCS."""
    import psutil

    def config_of(process: psutil.Process) -> str | None:
        try:
            for arg in process.cmdline():
                if arg.startswith("--autoscaling-config="):
                    return arg.split("=", 1)[1]
        except (psutil.Error, OSError):
            pass
        return None

    paths = []
    if status and status.get("monitor_pid"):
        try:
            if found := config_of(psutil.Process(int(status["monitor_pid"]))):
                paths.append(found)
        except (psutil.Error, ValueError):
            pass
    try:
        gcs_port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[-1]
    except Exception:
        return paths
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any(re.search(r"autoscaler/(_private|v2)/monitor\.py$", arg) for arg in cmdline) and any(
            arg.startswith("--gcs-address=") and arg.endswith(f":{gcs_port}") for arg in cmdline
        ):
            if (found := config_of(process)) and found not in paths:
                paths.append(found)
    return paths


def autoscaler() -> Autoscaler | None:
    """The autoscaler of the connected cluster and the node types it can start, or None without one.

    Read from, in this order: the node groups an autoscaler reported to the GCS; the config file of this
    cluster's autoscaler process, when it runs on this machine; `~/ray_bootstrap_config.yaml`, the file
    Ray's cluster launcher gives the head's autoscaler. An autoscaler whose node types none of these tells
    (KubeRay's reads them from the RayCluster resource), or a type whose resources its config leaves to
    the cloud to fill in, gives an Autoscaler without node types: their sizes are not known."""
    found = None
    if types := _gcs_cluster_config():
        found = Autoscaler(types, "the cluster config in the GCS")
    status = _autoscaler_status()
    # Only an autoscaler that can add nodes is started with a config file, so its process counts even
    # before its first status report (a cluster just started has none yet).
    monitor_configs = [] if found is not None else _monitor_config_paths(status)
    running = found is not None or _autoscaling(status) or bool(monitor_configs)
    for path in monitor_configs:
        if (config := _read_config(path)) is not None:
            found = Autoscaler(_types_from_config(config), path)
            break
    bootstrap = Path(BOOTSTRAP_CONFIG).expanduser()
    if found is None and (running or bootstrap.exists()) and (config := _read_config(bootstrap)) is not None:
        found = Autoscaler(_types_from_config(config), str(bootstrap))
    if found is not None and any(not t.resources for t in found.node_types if t.max_count != 0):
        return Autoscaler([], f"{found.source} (a node type without resources)")
    return found or (Autoscaler([], "its status (node types unknown)") if running else None)


def _fits(bundle: dict[str, float], resources: dict[str, float]) -> bool:
    return all(value <= resources.get(key, 0.0) + 1e-9 for key, value in bundle.items())


def _shown(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in resources.items() if not k.startswith("node:")) + "}"


def fit_error(spec: SweepSpec, nodes: list[dict[str, float]], scaler: Autoscaler | None) -> str | None:
    """Why one trial's reservation can never be placed on these nodes (their total resources) and what the
    autoscaler can add, or None. Without an autoscaler, the cluster is what it is now."""
    layout = role_layout(spec)
    bundles = trial_bundles(spec)[1:]
    launchable = [t for t in scaler.node_types if t.max_count != 0] if scaler else []
    where = "in the Ray cluster"
    if scaler is not None:
        types = ", ".join(f"{t.name} {_shown(t.resources)}" for t in launchable) or "none"
        where += f" or among the node types its autoscaler can add ({types}; read from {scaler.source})"
    for (role, index, _), bundle in zip(layout, bundles):
        if not any(_fits(bundle, node) for node in nodes) and not any(_fits(bundle, t.resources) for t in launchable):
            return (
                f"one trial of sweep {spec.name!r} needs {_shown(bundle)} for its {role} actor {index} "
                f"(resources.{'learner' if role == 'learner' else 'workers.' + role}), but no node {where} has that "
                f"much. Lower the resources in the sweep file or run on a bigger cluster."
            )
    need: dict[str, float] = {}
    for bundle in bundles:
        for key, value in bundle.items():
            need[key] = need.get(key, 0.0) + value
    for key, value in need.items():
        have = sum(node.get(key, 0.0) for node in nodes)
        unlimited = any(t.max_count < 0 and t.resources.get(key, 0.0) > 0 for t in launchable)
        most = have + sum(t.max_count * t.resources.get(key, 0.0) for t in launchable if t.max_count > 0)
        if not unlimited and value > most + 1e-9:
            scaled = "" if scaler is None else f" (with every node its autoscaler may add: {most:g})"
            return (
                f"one trial of sweep {spec.name!r} reserves {value:g} {key} (resources: learner and workers), "
                f"but the Ray cluster has {have:g} {key}{scaled}. Lower the resources in the sweep file "
                f"or run on a bigger cluster."
            )
    return None


def cluster_fit_error(spec: SweepSpec) -> str | None:
    """Why one trial's reservation can never fit this cluster, or None. (Needs a running Ray.)

    On an autoscaling cluster the nodes it may add count too, so a trial that wants a GPU fits a cluster
    whose GPU workers are scaled to zero. When an autoscaler runs but its node types cannot be read, nothing
    is rejected: the trial waits for the autoscaler (and Tune warns if none comes)."""
    nodes = [{k: float(v) for k, v in node["Resources"].items()} for node in ray.nodes() if node["Alive"]]
    scaler = autoscaler()
    if scaler is not None and not scaler.node_types:
        log.warning("an autoscaler runs but its node types are unknown: not checking that trials fit")
        return None
    return fit_error(spec, nodes, scaler)


# ---------------------------------------------------------------- inside a trial


@dataclass
class TrialContext:
    """What a driver needs to place and build its actors."""

    spec: SweepSpec
    config: Any
    seed: int
    trial_id: str
    train_every: int | None = None
    """Iterations between two points of the training metrics' history (`tracking.TRAIN_HISTORY_KEY`); None: a driver
    trains in the chunks it would anyway."""
    tracking_uri: str | None = None
    """The sweep's MLflow store (None outside a sweep): where cached shared models are (`model_cache.py`)."""
    _bundle_index: dict[tuple[str, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layout = role_layout(self.spec, self.config)
        # Tune drops an empty first bundle from the real placement group; ours (the trial's) stays.
        first = 1 if trial_bundles(self.spec, self.config)[0] else 0
        self._bundle_index = {(role, i): first + index for index, (role, i, _) in enumerate(layout)}
        self._resources = {role: resources for role, _, resources in layout}

    def cpus(self, role: str) -> float:
        return self._resources[role].cpus

    def actor_name(self, role: str, index: int = 0) -> str:
        """The name of a role's actor, unique in ACTOR_NAMESPACE: `ray.get_actor(name, namespace=ACTOR_NAMESPACE)`
        finds it, restarted or not."""
        return f"{self.trial_id}.{role}.{index}"

    def actor_options(self, role: str, index: int = 0) -> dict[str, Any]:
        resources = self._resources[role]
        options: dict[str, Any] = {
            "num_cpus": resources.cpus,
            "num_gpus": resources.gpus,
            "max_restarts": -1,
            "max_task_retries": 0,
            "name": self.actor_name(role, index),
            "namespace": ACTOR_NAMESPACE,
        }
        if resources.custom:
            options["resources"] = dict(resources.custom)
        placement_group = ray.util.get_current_placement_group()
        if placement_group is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=placement_group, placement_group_bundle_index=self._bundle_index[(role, index)]
            )
        return options

    def placement(self) -> dict[str, str]:
        """{'trial': node id, 'learner.0': node id, '<role>.<i>': node id, ...}: the node of the trial function
        and of each actor's bundle now (a bundle moves when its node is lost)."""
        placement = {"trial": ray.get_runtime_context().get_node_id()}
        placement_group = ray.util.get_current_placement_group()
        if placement_group is None:
            return placement
        nodes = ray.util.placement_group_table(placement_group).get("bundles_to_node_id", {})
        for (role, i), index in self._bundle_index.items():
            if index in nodes:
                placement[f"{role}.{i}"] = nodes[index]
        return placement


def wait_until_alive(actors: list[Any], timeout_s: float | None = None) -> None:
    """Ping each actor until it answers: Ray restarts a dead actor (max_restarts=-1), on another node when its
    own was lost (the placement group's bundle moves first). `ORCHESTRATOR_RESTART_TIMEOUT_S` (default 300):
    how long to wait, e.g. for an autoscaler to replace a lost node."""
    timeout_s = timeout_s if timeout_s is not None else float(os.environ.get("ORCHESTRATOR_RESTART_TIMEOUT_S") or 300)
    deadline = time.monotonic() + timeout_s
    for actor in actors:
        while True:
            try:
                ray.get(actor.ping.remote(), timeout=10)
                break
            except (*ACTOR_ERRORS, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
