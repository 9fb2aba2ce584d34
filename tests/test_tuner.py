"""A sweep spec becomes the Tune objects it names (no Ray started)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
from ray.tune.search.optuna import OptunaSearch

from orchestrator.callbacks import trial_done
from orchestrator.placement import trial_bundles
from orchestrator.spec import load_sweep
from orchestrator.tuner import _scheduler, _search, _stop, param_space
from tests.conftest import ROOT

SWEEP = ROOT / "sweeps" / "samplers.yaml"


def test_search_space_becomes_tune_domains_by_dotted_key():
    spec = load_sweep(
        SWEEP, ["search_space={replay.enabled: {grid: [true, false]}, lr_policy: {uniform: [0.001, 0.002]}}"]
    )
    space = param_space(spec)
    assert space["replay.enabled"] == tune.grid_search([True, False])
    assert isinstance(space["lr_policy"], tune.search.sample.Float)
    assert space["lr_policy"].lower == 0.001 and space["lr_policy"].upper == 0.002


def test_schedulers_search_and_stop():
    asha = load_sweep(
        SWEEP,
        [
            "tune.scheduler={type: asha, grace_period: 3, max_t: 9}",
            "tune.search=optuna",
            "tune.stop={training_iteration: 7}",
        ],
    )
    scheduler = _scheduler(asha)
    assert isinstance(scheduler, ASHAScheduler) and scheduler._max_t == 9
    assert isinstance(_search(asha), OptunaSearch)
    assert _stop(asha) == {"training_iteration": 7}
    pbt = load_sweep(SWEEP, ["tune.scheduler={type: pbt, perturbation_interval: 3}"])
    scheduler = _scheduler(pbt)
    assert isinstance(scheduler, PopulationBasedTraining)
    assert set(scheduler._hyperparam_mutations) == {"lr_policy", "exploration_factor"}
    assert _scheduler(load_sweep(SWEEP)) is None and _search(load_sweep(SWEEP)) is None


def test_one_bundle_per_actor_after_the_trials_own_bundle_on_the_head():
    spec = load_sweep(
        SWEEP, ["resources.learner={cpus: 2, gpus: 1}", "resources.workers.replay_buffer={count: 1, cpus: 0.5}"]
    )
    assert trial_bundles(spec) == [{"node:__internal_head__": 0.001}, {"CPU": 2, "GPU": 1}, {"CPU": 0.5}]


@pytest.mark.parametrize("sweep", sorted(p.name for p in (ROOT / "sweeps").glob("*.yaml")))
def test_a_restored_trial_is_done_at_its_config_budget(sweep):
    """Resume counts a trial restored from a snapshot before its `done` result as finished once its last step
    reached the resolved config's `total_iters`: every family's config names its budget that way."""
    spec = load_sweep(ROOT / "sweeps" / sweep)
    point = {key: (domain.values[0] if domain.values else domain.low) for key, domain in spec.search_space.items()}
    budget = spec.resolved_config(point).total_iters
    result = SimpleNamespace(config=point, metrics={"step": budget, "training_iteration": 1})
    assert trial_done(result.metrics, result.config, spec)
    result.metrics["step"] = budget - 1
    assert not trial_done(result.metrics, result.config, spec)
