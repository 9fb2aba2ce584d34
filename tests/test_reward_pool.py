"""The reward pool (actors/reward.py) on a real local Ray: its values are the reward's, a worker that dies is
restarted and its chunk sent again, a digits learner trains the same with r on reward actors as on itself, and the
rtb driver places the pool when the sweep's resources name the `reward` role (only then)."""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import pytest
import ray
import torch

from actors.reward import PooledReward, RewardWorker
from orchestrator.errors import OrchestratorError
from orchestrator.families.rtb.priors import check_reward_pool
from orchestrator.placement import role_layout
from orchestrator.spec import SweepSpec
from orchestrator.trial import stop_actors
from tests.conftest import family_driver
from workloads.rtb.image_config import ImagePosteriorConfig
from workloads.rtb.image_learner import ImageRTBLearner, MeanIntensityReward, make_reward, trained_prior_state
from workloads.rtb.trial_config import RTBTrialConfig


def _workers(build_reward, count: int) -> list:
    return [
        ray.remote(RewardWorker).options(num_cpus=0.25, max_restarts=-1).remote(build_reward, 0.25)
        for _ in range(count)
    ]


def test_pooled_values_are_the_rewards_and_a_dead_worker_is_restarted(ray_cluster, tmp_path):
    died = tmp_path / "died"

    class DiesAtItsFirstBatch(MeanIntensityReward):  # local: pickled by value into the worker
        def log_r(self, x, targets):
            if not died.exists():
                died.touch()
                os._exit(1)
            return super().log_r(x, targets)

    workers = _workers(DiesAtItsFirstBatch, 1) + _workers(MeanIntensityReward, 1)
    pool = PooledReward(workers, min_chunk=4)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=generator) * 2 - 1
    targets = torch.randint(0, 10, (40,), generator=generator)
    expected = MeanIntensityReward().log_r(x, targets)
    try:
        torch.testing.assert_close(pool.log_r(x, targets), expected)
        assert died.exists() and pool.resent_chunks >= 1
        # one chunk each; the restarted worker evaluated its chunk once
        assert ray.get([w.rows_evaluated.remote() for w in workers]) == [20, 20]
        assert pool.log_r(x[:5], targets[:5]).shape == (5,)  # fewer rows than 2 chunks of min_chunk: one worker
    finally:
        for worker in workers:
            ray.kill(worker, no_restart=True)


def test_a_digits_learner_trains_the_same_with_r_on_reward_actors(ray_cluster):
    config = ImagePosteriorConfig(targets=(3,)).smoke()
    prior = trained_prior_state(config)
    workers = _workers(functools.partial(make_reward, config, "cpu"), 2)
    try:
        local = ImageRTBLearner(config, seed=0, prior_state=prior)
        pooled = ImageRTBLearner(config, seed=0, prior_state=prior, reward_pool=PooledReward(workers, min_chunk=2))
        local_metrics, _ = local.train(3)
        pooled_metrics, _ = pooled.train(3)
        assert local_metrics.keys() == pooled_metrics.keys()
        for name, value in local_metrics.items():
            assert pooled_metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-4), name  # float32 chunks
        assert sum(ray.get([w.rows_evaluated.remote() for w in workers])) == 3 * config.batch_size
    finally:
        for worker in workers:
            ray.kill(worker, no_restart=True)


def _rtb_spec(task: str, reward_workers: int | None) -> SweepSpec:
    resources = {"learner": {"cpus": 0.5}, "workers": {"replay_buffer": {"cpus": 0.25}}}
    if reward_workers:
        resources["workers"]["reward"] = {"count": reward_workers, "cpus": 0.25}
    return SweepSpec.from_dict(
        {
            "name": "pool",
            "workload": "rtb",
            "config": {"task": task, "digits": {"targets": [3]}},
            "tune": {"metric": "eval/mean_log_r", "mode": "max"},
            "resources": resources,
        }
    )


def test_the_reward_role_is_there_only_when_named_and_only_for_digits():
    assert set(_rtb_spec("digits", None).resources.workers) == {"replay_buffer"}  # no bundle for an unnamed pool
    assert [role for role, _, _ in role_layout(_rtb_spec("digits", None))] == ["learner", "replay_buffer"]
    assert _rtb_spec("digits", 3).resources.workers["reward"].count == 3
    assert [role for role, _, _ in role_layout(_rtb_spec("digits", 2))] == [
        "learner",
        "replay_buffer",
        "reward",
        "reward",
    ]
    check_reward_pool(_rtb_spec("digits", 2))
    with pytest.raises(OrchestratorError, match="resources.workers.reward.*task toy2d"):
        check_reward_pool(_rtb_spec("toy2d", 2))


def test_the_driver_evaluates_r_on_the_reward_actors_the_sweep_names(ray_cluster):
    workers = {"replay_buffer": {"cpus": 0.25}, "reward": {"count": 2, "cpus": 0.25}}
    resources = {"learner": {"cpus": 0.5}, "workers": workers}
    config = RTBTrialConfig.model_validate({"task": "digits", "digits": {"targets": [3]}}).smoke()
    driver = family_driver("pool", "rtb", config.model_dump(mode="json"), "eval/mean_log_r", "max", resources=resources)
    try:
        assert len(driver.reward_workers) == 2
        metrics, _ = driver.advance()
        rows = ray.get([w.rows_evaluated.remote() for w in driver.reward_workers])
        assert sum(rows) > 0  # training batches, evaluation samples and the prior reference
        assert math.isfinite(metrics["eval/mean_log_r"]) and np.isfinite(metrics["train/loss"])
    finally:
        stop_actors(driver)
