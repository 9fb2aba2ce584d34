"""What every family's driver shares. A driver (orchestrator/families/<family>/driver.py) creates the trial's
actors in its placement group and runs the loop between two reports; `orchestrator/trial.py` does what every
family shares (restore, report, checkpoint, recovery from a dead actor).

A driver is built with a `placement.TrialContext` and has `step`, `finished`, `device`, `advance()` ->
(metrics, {artifact file name: writer(path)}; `model:<name>`: writer(folder) of an MLflow LoggedModel of the
trial's run, tracking.MODEL_PREFIX), `state()`, `load_state(state)`, `recover(state)` and `actors()`.
"""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors.channel import BoundedInFlight
from actors.learner import Learner
from actors.replay_buffer import ReplayBufferRole
from orchestrator.placement import TrialContext, wait_until_alive
from orchestrator.tracking import TRAIN_HISTORY_KEY


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

    def next_chunks(self, sub_chunk: int) -> list[int]:
        """The iterations from `step` to the next evaluation (every `eval_every`) or the budget, in sub-chunks of at
        most `sub_chunk`: one `train` call each."""
        chunk = min(self.config.eval_every, self.config.total_iters - self.step)
        return [min(sub_chunk, chunk - start) for start in range(0, chunk, sub_chunk)]

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


MAX_IN_FLIGHT = 2
"""Terminal-state batches on their way to a buffer actor at once (actors/channel.py): backpressure beyond."""


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


def start_workers(ctx: TrialContext, role: str, actor_class: type, arguments: list[tuple]) -> tuple[list, list[str]]:
    """One actor of `role` per entry of `arguments` (its constructor's arguments, before the role's CPU count),
    in the role's bundles: (handles, names). A learner gets the names (actors.named.NamedActors), which outlast a
    restart."""
    actors = [
        ray.remote(actor_class).options(**ctx.actor_options(role, i)).remote(*args, ctx.cpus(role))
        for i, args in enumerate(arguments)
    ]
    return actors, [ctx.actor_name(role, i) for i in range(len(arguments))]


def bytes_writers(files: dict[str, bytes]) -> dict[str, Callable[[Path], None]]:
    """Artifact writers for files an actor rendered as bytes (figures as PNG, structure files)."""
    return {name: (lambda path, data=data: path.write_bytes(data)) for name, data in files.items()}


def write_points(path: Path, points: np.ndarray) -> None:
    """Points [N, D] as a Parquet table with columns x0 .. x{D-1}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({f"x{i}": points[:, i] for i in range(points.shape[1])}), path)


def evaluation_artifacts(evaluation: Any) -> dict[str, Callable[[Path], None]]:
    """Writers of an evaluation's artifacts (an `actors.learner.LearnerEvaluation`): samples.parquet (its points),
    its figures as PNG and its files."""
    samples = evaluation.samples
    return {
        "samples.parquet": lambda path: write_points(path, samples),
        **bytes_writers(evaluation.figures_png),
        **bytes_writers(evaluation.files),
    }


def mean_metrics(dicts: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the chunks of training between two reports that logged it."""
    keys = {k for d in dicts for k in d}
    return {k: float(np.mean([d[k] for d in dicts if k in d])) for k in sorted(keys)}


class LearnerDriver(ActorDriver):
    """A trial of one learner actor and nothing beside it: its checkpoint is the learner's state."""

    def __init__(self, ctx: TrialContext, learner_class: Callable[..., Any], **learner_kwargs: Any):
        """`learner_class` and `learner_kwargs` as `start_learner` takes them."""
        self.ctx = ctx
        self.config = ctx.config
        self.learner = start_learner(ctx, learner_class, **learner_kwargs)
        self.step = 0
        self.device = ray.get(self.learner.device.remote())

    def state(self) -> dict[str, Any]:
        return {"learner": ray.get(self.learner.get_state.remote())}

    def load_state(self, state: dict[str, Any]) -> None:
        self.step = ray.get(self.learner.set_state.remote(state["learner"]))

    def actors(self) -> list[Any]:
        return [self.learner]


class LearnerBufferDriver(ActorDriver):
    """A learner and a replay-buffer actor that receives terminal states through a bounded channel
    (`to_buffer`): checkpoints hold both, and a recovery drops the calls in flight to a dead buffer."""

    buffer: Any
    to_buffer: Any  # actors.channel.BoundedInFlight

    def evaluate_into(
        self, metrics: dict[str, Any], chunk_metrics: list[dict[str, float]], chunk_ends: list[int]
    ) -> tuple[dict[str, Any], dict[str, Callable[[Path], None]]]:
        """After a report's training: drains the channel, evaluates, and adds to `metrics` the evaluation, the
        buffer's size, the channel's backpressure and the history of the chunks (their metrics and end steps).
        Artifacts: samples.parquet (the points), the figures and the evaluation's files."""
        self.to_buffer.drain()
        evaluation = ray.get(self.learner.evaluate.remote())
        self.step = ray.get(self.learner.step.remote())
        metrics.update(evaluation.metrics)
        metrics["train/buffer_size"] = float(ray.get(self.buffer.size.remote()))
        metrics["train/backpressure_s"] = self.to_buffer.blocked_s
        metrics[TRAIN_HISTORY_KEY] = [[end, m] for end, m in zip(chunk_ends, chunk_metrics)]
        return metrics, evaluation_artifacts(evaluation)

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


class LocalSearchReplayDriver(LearnerBufferDriver):
    """A learner whose `train(n, replay)` returns (metrics, terminal states) and trains some iterations on a replay
    batch, and a replay-buffer actor (actors/replay_buffer.py) that searches near the buffer's states between the
    learner's chunks; batches are passed as ObjectRefs.

    Between two reports the learner trains `eval_every` iterations in sub-chunks of `replay.local_search_every`.
    Each sub-chunk's terminal states go to the buffer through a bounded channel; with replay on, each sub-chunk
    trains its odd iterations on a batch sampled from the buffer, and a local-search round runs on the buffer actor
    while the learner trains. Each round is told the learner step at its start (the end of the sub-chunk whose
    states it may search); its results keep it, and the learner reports train/replay_staleness_iters, the
    iterations between that step and the one that trains on them.
    """

    def __init__(
        self,
        ctx: TrialContext,
        learner_class: Callable[..., Any],
        replay: Any,
        batch_size: int,
        buffer_target: str | Callable[[], Any],
        **learner_kwargs: Any,
    ):
        """`learner_class`, `learner_kwargs`: as `start_learner` takes them; `replay`: the ReplayConfig of the
        buffer and the learner; `buffer_target`: the target the buffer's local search runs on, by name or as a
        small picklable function that builds it (ReplayBufferRole)."""
        self.ctx = ctx
        self.config = ctx.config
        self.replay, self.batch_size = replay, batch_size
        self.learner = start_learner(ctx, learner_class, **learner_kwargs)
        self.buffer = (
            ray.remote(ReplayBufferRole)
            .options(**ctx.actor_options("replay_buffer"))
            .remote(replay, buffer_target, ctx.seed + 1, ctx.cpus("replay_buffer"))
        )
        self.to_buffer = BoundedInFlight(MAX_IN_FLIGHT)
        self.step = 0
        self.device = ray.get(self.learner.device.remote())

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        """Train up to the next evaluation, evaluate; return metrics and artifact writers."""
        replay = self.replay
        # With replay, local search runs between sub-chunks; without, sub-chunks only give training curves points.
        sizes = self.next_chunks(
            replay.local_search_every if replay.enabled else self.ctx.train_every or self.config.eval_every
        )
        metric_refs, search_refs = [], []
        replay_batch = self._replay_batch(sizes[0])
        step = self.step
        for k, n in enumerate(sizes):
            metrics_ref, states_ref = self.learner.train.options(num_returns=2).remote(n, replay_batch)
            metric_refs.append(metrics_ref)
            step += n
            self.to_buffer.submit(self.buffer.add.remote, states_ref)
            if replay.enabled:
                # The next replay batch is queued before this round's local search, so the learner
                # trains sub-chunk k+1 (from `step` on) while the search runs; its results serve
                # sub-chunk k+2 on.
                replay_batch = self._replay_batch(sizes[k + 1]) if k + 1 < len(sizes) else None
                search_refs.append(self.buffer.local_search.remote(step))
        train_metrics = ray.get(metric_refs)
        metrics = mean_metrics(train_metrics + [m for m in ray.get(search_refs) if m])
        ends = [self.step + sum(sizes[: k + 1]) for k in range(len(sizes))]
        return self.evaluate_into(metrics, train_metrics, ends)

    def _replay_batch(self, num_iters: int) -> Any:
        """States for the odd (backward-trajectory) iterations of the next `num_iters`."""
        if not self.replay.enabled:
            return None
        return self.buffer.sample.remote(math.ceil(num_iters / 2) * self.batch_size)

    def actors(self) -> list[Any]:
        return [self.learner, self.buffer]
