"""WCST-ML trial: one Learner actor trains one model (architecture, cue set, seed) on the diagonal set, or forced
onto one cue, one epoch per report.

    every report:  train one epoch -> accuracies on the diagonal and on each cue's off-diagonal test set
    last report:   + the flatness curve, flatness/loss_increase/r_<r> (workloads/wcst/flatness.py)

Nothing else runs beside the learner: the data are rendered once inside it, and a trial is small enough for one
CPU (or a GPU's fraction); a sweep gets its parallelism from many trials.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from orchestrator.driver import ActorDriver, start_learner
from orchestrator.placement import TrialContext
from workloads.wcst.learner import WcstLearner


class WcstDriver(ActorDriver):
    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.config = ctx.config
        self.learner = start_learner(ctx, WcstLearner)
        self.step = 0
        self.device = ray.get(self.learner.device.remote())

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        train_ref, _ = self.learner.train.options(num_returns=2).remote(1)
        evaluation_ref = self.learner.evaluate.remote()  # queued behind the epoch on the same actor
        metrics = {**ray.get(train_ref), **ray.get(evaluation_ref).metrics}  # the last one has the flatness curve
        self.step = ray.get(self.learner.step.remote())
        return metrics, {}

    def state(self) -> dict[str, Any]:
        return {"learner": ray.get(self.learner.get_state.remote())}

    def load_state(self, state: dict[str, Any]) -> None:
        self.step = ray.get(self.learner.set_state.remote(state["learner"]))

    def actors(self) -> list[Any]:
        return [self.learner]
