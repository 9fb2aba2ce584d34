"""WCST-ML trial: one Learner actor trains one model (architecture, cue set, seed) on the diagonal set, or forced
onto one cue, one epoch per report.

    every report:  train one epoch -> accuracies on the diagonal and on each cue's off-diagonal test set
    last report:   + the flatness curve, flatness/loss_increase/r_<r> (workloads/wcst/flatness.py)

Nothing else runs beside the learner: the data are rendered once inside it, and a trial is small enough for one
CPU (or a GPU's fraction); a sweep gets its parallelism from many trials.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import ray

from actors.learner import Learner
from orchestrator.drivers import ActorDriver
from orchestrator.placement import TrialContext


class WcstDriver(ActorDriver):
    learner_class = "workloads.wcst.learner:WcstLearner"

    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.config = ctx.config
        self.learner = ray.remote(Learner).options(**ctx.actor_options("learner")).remote(
            self.learner_class, self.config, ctx.seed, ctx.cpus("learner"))
        self.step = 0
        self.device = ray.get(self.learner.ping.remote())

    @property
    def finished(self) -> bool:
        return self.step >= self.config.epochs  # a step is an epoch here

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        train_ref, _ = self.learner.train.options(num_returns=2).remote(1)
        evaluation_ref = self.learner.evaluate.remote()  # queued behind the epoch on the same actor
        metrics = {**ray.get(train_ref), **ray.get(evaluation_ref)["metrics"]}
        self.step = ray.get(self.learner.step.remote())
        if self.finished:
            metrics.update(ray.get(self.learner.call.remote("flatness")))
        return metrics, {}

    def state(self) -> dict[str, Any]:
        return {"learner": ray.get(self.learner.get_state.remote())}

    def load_state(self, state: dict[str, Any]) -> None:
        self.step = ray.get(self.learner.set_state.remote(state["learner"]))

    def actors(self) -> list[Any]:
        return [self.learner]
