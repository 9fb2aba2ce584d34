"""Where a trial's actors go: one bundle per actor, inside the trial's own placement group.

Bundle order (see `trial_bundles`): the trial function's own bundle (empty), the learner, then
each worker role's `count` actors in the order the workload declares its roles.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from orchestrator.spec import RoleResources, SweepSpec
from orchestrator.registry import get_workload

ACTOR_NAMESPACE = "orchestrator"
ACTOR_ERRORS = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


def _bundle(resources: RoleResources) -> dict[str, float]:
    bundle = {"CPU": resources.cpus}
    if resources.gpus:
        bundle["GPU"] = resources.gpus
    return bundle


def role_layout(spec: SweepSpec) -> list[tuple[str, int, RoleResources]]:
    """[(role, index within role, resources)] in bundle order, learner first."""
    layout = [("learner", 0, spec.resources.learner)]
    for role in get_workload(spec.workload).worker_roles:
        resources = spec.resources.workers[role]
        layout += [(role, i, resources) for i in range(resources.count)]
    return layout


def trial_bundles(spec: SweepSpec) -> list[dict[str, float]]:
    # The trial function only coordinates: an empty head bundle leaves every CPU to the actors.
    return [{}] + [_bundle(resources) for _, _, resources in role_layout(spec)]


def cluster_fit_error(spec: SweepSpec) -> str | None:
    """Why one trial's reservation can never fit this cluster, or None. (Needs a running Ray.)"""
    total = ray.cluster_resources()
    need: dict[str, float] = {}
    for bundle in trial_bundles(spec)[1:]:
        for key, value in bundle.items():
            need[key] = need.get(key, 0.0) + value
    for key, value in need.items():
        if value > total.get(key, 0.0) + 1e-9:
            return (f"one trial of sweep {spec.name!r} reserves {value:g} {key} (resources: learner and workers), "
                    f"but the Ray cluster has {total.get(key, 0.0):g} {key}. Lower the resources in the sweep file "
                    f"or run on a bigger cluster.")
    return None


@dataclass
class TrialContext:
    """What a driver needs to place and build its actors."""

    spec: SweepSpec
    config: Any
    seed: int
    trial_id: str
    _bundle_index: dict[tuple[str, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layout = role_layout(self.spec)
        # Tune drops an empty head bundle from the real placement group, so actors start at 0.
        self._bundle_index = {(role, i): index for index, (role, i, _) in enumerate(layout)}
        self._resources = {role: resources for role, _, resources in layout}

    def cpus(self, role: str) -> float:
        return self._resources[role].cpus

    def actor_options(self, role: str, index: int = 0) -> dict[str, Any]:
        resources = self._resources[role]
        options: dict[str, Any] = dict(
            num_cpus=resources.cpus, num_gpus=resources.gpus,
            max_restarts=-1, max_task_retries=0,
            name=f"{self.trial_id}.{role}.{index}", namespace=ACTOR_NAMESPACE,
        )
        placement_group = ray.util.get_current_placement_group()
        if placement_group is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=placement_group, placement_group_bundle_index=self._bundle_index[(role, index)])
        return options


def wait_until_alive(actors: list[Any], timeout_s: float = 120.0) -> None:
    """Ping each actor until it answers: Ray restarts a dead actor (max_restarts=-1)."""
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
