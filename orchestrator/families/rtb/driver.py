"""RTB trial: a learner of the trial's task (the posterior, its prior loaded from the sweep's MLflow store) and a
replay-buffer actor of the posterior's own samples, batches passed as ObjectRefs.

Between two reports the learner trains `eval_every` iterations in sub-chunks (`replay.draw_every` with replay on).
Each sub-chunk's forward samples, with their log r, go to the buffer through a bounded channel; with replay on,
each sub-chunk trains some of its iterations from one prioritized draw from the buffer (none while the buffer is
empty): the toy's odd iterations on Brownian bridges to the drawn states, the digits' every replay_every-th and
the inverse problems' every backtrack_every-th by backtracking from them (rows [z | y]: each sample with its
measurement). The last evaluation also writes the posterior (`posterior.pt`: the learner's state, prior included),
as a file and as the trial run's LoggedModel `posterior`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import ray
import torch

from actors.channel import BoundedInFlight
from actors.reward import PooledReward, RewardWorker
from actors.sample_buffer import SampleBufferRole
from orchestrator.driver import LearnerBufferDriver, mean_metrics, start_learner, start_workers
from orchestrator.families.rtb import REWARD_ROLE
from orchestrator.families.rtb.priors import cached_prior, cached_prior_learner
from orchestrator.placement import ACTOR_NAMESPACE, TrialContext
from orchestrator.tracking import MODEL_PREFIX
from workloads.rtb.image_learner import make_reward

MAX_IN_FLIGHT = 2


class RTBDriver(LearnerBufferDriver):
    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.config = ctx.config
        self.step = 0
        prior = cached_prior(ctx.tracking_uri, self.config)
        self.task_config = self.config.learner_config
        self.reward_workers, learner_kwargs = [], {}
        if REWARD_ROLE in ctx.spec.resources.workers:  # r on a pool of actors (digits; prepare() checks the task)
            count = ctx.spec.resources.workers[REWARD_ROLE].count
            build_reward = functools.partial(make_reward, self.task_config, "cpu")
            self.reward_workers, names = start_workers(ctx, REWARD_ROLE, RewardWorker, [(build_reward,)] * count)
            learner_kwargs["reward_pool"] = PooledReward(names, namespace=ACTOR_NAMESPACE)
        self.learner = start_learner(
            ctx,
            cached_prior_learner,
            tracking_uri=ctx.tracking_uri,
            prior_model_id=None if prior is None else prior.model_id,
            **learner_kwargs,
        )
        self.device = ray.get(self.learner.device.remote())
        replay = self.replay = self.task_config.replay
        self.buffer = (
            ray.remote(SampleBufferRole)
            .options(**ctx.actor_options("replay_buffer"))
            .remote(replay.capacity, replay.prioritization, replay.rank_k, ctx.seed + 1)
        )
        self.to_buffer = BoundedInFlight(MAX_IN_FLIGHT)

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        """Train up to the next evaluation, evaluate; return metrics and artifact writers."""
        cfg, replay_config = self.task_config, self.replay
        metric_refs, ends = [], []
        for n in self.next_chunks(
            replay_config.draw_every if replay_config.enabled else self.ctx.train_every or cfg.eval_every
        ):
            # at most every other iteration replays (the toy's odd ones; the images' every replay_every-th)
            replay = self.buffer.sample.remote(math.ceil(n / 2) * cfg.batch_size) if replay_config.enabled else None
            metrics_ref, samples_ref = self.learner.train.options(num_returns=2).remote(n, replay)
            metric_refs.append(metrics_ref)
            if replay_config.enabled:
                self.to_buffer.submit(self.buffer.add.remote, samples_ref)
            ends.append((ends[-1] if ends else self.step) + n)
        train_metrics = ray.get(metric_refs)
        metrics, artifacts = self.evaluate_into(mean_metrics(train_metrics), train_metrics, ends)
        if self.finished:  # the learner's state, prior included, also as the run's LoggedModel `posterior`
            posterior = ray.get(self.learner.get_state.remote())
            artifacts["posterior.pt"] = lambda path: torch.save(posterior, path)
            artifacts[f"{MODEL_PREFIX}posterior"] = lambda folder: torch.save(posterior, folder / "posterior.pt")
        return metrics, artifacts

    def actors(self) -> list:
        return [self.learner, self.buffer, *self.reward_workers]
