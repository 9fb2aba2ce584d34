"""What every family's driver shares. A driver (orchestrator/families/<family>/driver.py) creates the trial's
actors in its placement group and runs the loop between two reports; `orchestrator/trial.py` does what every
family shares (restore, report, checkpoint, recovery from a dead actor).

A driver is built with a `placement.TrialContext` and has `step`, `finished`, `device`, `advance()` ->
(metrics, {artifact file name: writer(path)}), `state()`, `load_state(state)`, `recover(state)` and `actors()`.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors.learner import Learner
from orchestrator.placement import TrialContext, wait_until_alive


class ActorDriver:
    """What every driver shares: a learner actor that counts `step`, and recovery after a death.

    A driver sets `config` (with `total_iters`), `learner`, `step`, and implements `advance`,
    `state`, `load_state` and `actors` (every actor it made, for recovery)."""

    config: Any
    learner: Any
    step: int

    @property
    def finished(self) -> bool:
        return self.step >= self.config.total_iters

    def actors(self) -> list[Any]:
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def recover(self, state: dict[str, Any] | None) -> None:
        """After an actor died: wait for Ray to restart it, then reload the last checkpoint."""
        wait_until_alive(self.actors())
        if state is not None:
            self.load_state(state)
        else:
            self.step = ray.get(self.learner.step.remote())


def start_learner(ctx: TrialContext, learner_class: type, **learner_kwargs: Any) -> Any:
    """The trial's learner actor, in the learner's bundle, wrapping `learner_class` (a plain learner of
    workloads/, built with the trial's config and seed and `learner_kwargs`).

    Ray re-runs the constructor with these arguments when it restarts the actor, but keeps no object reference
    for that (ray-project/ray#53727): `learner_kwargs` are small values to rebuild from (names, not actor handles;
    no ObjectRef, nothing over Ray's 100 KB inline limit). tests/test_actor_arguments.py checks every family."""
    options = ctx.actor_options("learner")
    return (
        ray.remote(Learner)
        .options(**options)
        .remote(learner_class, ctx.config, ctx.seed, ctx.cpus("learner"), learner_kwargs)
    )


def bytes_writers(files: dict[str, bytes]) -> dict[str, Callable[[Path], None]]:
    """Artifact writers for files an actor rendered as bytes (figures as PNG, structure files)."""
    return {name: (lambda path, data=data: path.write_bytes(data)) for name, data in files.items()}


def mean_metrics(dicts: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the chunks of training between two reports that logged it."""
    keys = {k for d in dicts for k in d}
    return {k: float(np.mean([d[k] for d in dicts if k in d])) for k in sorted(keys)}


class LearnerBufferDriver(ActorDriver):
    """A learner and a replay-buffer actor that receives terminal states through a bounded channel
    (`to_buffer`): checkpoints hold both, and a recovery drops the calls in flight to a dead buffer."""

    buffer: Any
    to_buffer: Any  # actors.channel.BoundedInFlight

    def state(self) -> dict[str, Any]:
        return {
            "learner": ray.get(self.learner.get_state.remote()),
            "replay_buffer": ray.get(self.buffer.get_state.remote()),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.step = ray.get(self.learner.set_state.remote(state["learner"]))
        ray.get(self.buffer.set_state.remote(state["replay_buffer"]))

    def recover(self, state: dict[str, Any] | None) -> None:
        self.to_buffer.discard()  # calls to a dead actor never finish
        super().recover(state)
