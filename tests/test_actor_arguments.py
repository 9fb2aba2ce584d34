"""Every actor a trial starts can be restarted from its constructor arguments alone.

Ray restarts a dead actor (max_restarts=-1, `placement.TrialContext.actor_options`) by running its constructor
again with the arguments it was created with, but keeps no object reference among them for that
(ray-project/ray#53727): an ObjectRef argument, an actor handle or ObjectRef inside one, or an argument over Ray's
inline limit (which Ray puts in the object store) may be gone by then, and Ray logs an error when such an actor is
created. Each family's trial driver is built here as `orchestrator run` builds it, recording the arguments of every
actor it starts.
"""

from __future__ import annotations

import math
import time

import pytest
import ray
import ray.actor

from orchestrator.placement import ACTOR_ERRORS
from orchestrator.trial import stop_actors
from tests.test_behaviour_unchanged import RUNS, build_driver

INLINE_LIMIT = 100 * 1024
"""Ray's `max_direct_call_object_size` (default 100 KiB): a larger argument goes to the object store."""

DRIVERS = {
    "samplers": RUNS["samplers-tb-replay"],
    "torsional": RUNS["torsional-vargrad"],
    "sed": RUNS["sed"],
    "sed-heads": {**RUNS["sed"], "config": {**RUNS["sed"]["config"], "mode": "heads"}},
    "wcst": RUNS["wcst"],
    "outsourced-pools": {
        "workload": "outsourced",
        "smoke": True,
        "config": {},
        "resources": {"learner": {"cpus": 0.5}, "workers": {"reward": {"count": 2, "cpus": 0.25}}},
    },
    "outsourced-mcmc": {
        "workload": "outsourced",
        "smoke": True,
        "config": {"method": "mcmc"},
        "resources": {"learner": {"cpus": 0.5}, "workers": {"chains": {"count": 2, "cpus": 0.25}}},
    },
}


@pytest.fixture
def created(monkeypatch) -> list[tuple[str, list, dict]]:
    """(class name, constructor arguments, options) of every actor created while the test runs."""
    calls: list[tuple[str, list, dict]] = []
    create = ray.actor.ActorClass._remote

    def recording(self, args=None, kwargs=None, **options):
        calls.append((self.__ray_metadata__.class_name, [*(args or ()), *(kwargs or {}).values()], options))
        return create(self, args=args, kwargs=kwargs, **options)

    monkeypatch.setattr(ray.actor.ActorClass, "_remote", recording)
    return calls


@pytest.mark.parametrize("name", list(DRIVERS))
def test_restartable_actors_get_only_small_self_contained_arguments(ray_cluster, created, name):
    driver = build_driver(name, f"{name}_args", DRIVERS[name])
    stop_actors(driver)
    restartable = [(cls, args) for cls, args, options in created if options.get("max_restarts", 0) != 0]
    assert len(restartable) == len(driver.actors()), [cls for cls, _ in restartable]
    context = ray._private.worker.global_worker.get_serialization_context()
    for cls, args in restartable:
        for i, arg in enumerate(args):
            assert not isinstance(arg, ray.ObjectRef), (cls, i)
            serialized = context.serialize(arg)
            assert not serialized.contained_object_refs, (cls, i, arg)
            assert serialized.total_bytes < INLINE_LIMIT, (cls, i, serialized.total_bytes)


def test_a_restarted_torsional_learner_finds_its_energy_actors(ray_cluster):
    """The learner gets the energy actors' names (not handles) and looks them up again after a restart."""
    driver = build_driver("torsional", "torsional_restart", DRIVERS["torsional"])
    try:
        state = driver.state()
        ray.kill(driver.learner, no_restart=False)
        _until_it_fails(driver.learner)  # as a trial sees it, before it recovers
        driver.recover(state)
        metrics, _ = driver.advance()
        assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["eval/jsd"])
    finally:
        stop_actors(driver)


def test_a_killed_chain_actor_is_restarted_from_the_checkpoint(ray_cluster):
    """MCMC in z on two chain actors: one is killed after a checkpoint; the trial's recovery restarts it and loads
    the checkpoint into both, and the next report is the one it would have been."""
    driver = build_driver("outsourced-mcmc", "outsourced_restart", DRIVERS["outsourced-mcmc"])
    try:
        driver.advance()
        state = driver.state()
        expected, _ = driver.advance()
        ray.kill(driver.chain_actors[0], no_restart=False)
        _until_it_fails(driver.chain_actors[0])
        driver.recover(state)
        assert driver.step == 10
        metrics, _ = driver.advance()
        assert driver.step == 20
        for name in ("eval/reward_evaluations", "eval/step_size", "eval/mean_log_reward", "eval/tv_to_exact"):
            assert metrics[name] == expected[name], name
    finally:
        stop_actors(driver)


def _until_it_fails(actor, timeout_s: float = 60) -> None:
    """Ping a killed actor until a call fails (`ray.kill` returns before the actor is gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ping.remote(), timeout=timeout_s)
        except ACTOR_ERRORS:
            return
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers")
