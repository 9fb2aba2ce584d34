"""Torsional-GFN trial: a Learner actor whose energies come from a pool of energy actors.

The learner (GPU when its bundle has one) samples a batch mixing molecules and local structures;
its energy function sends the batch's conformers to the `energy` actors (RDKit or OpenMM), split
across them and gathered in order (`actors/energy.py`); then it takes the TB / VarGrad step.

With replay on, training runs in draws of `replay.draw_every` iterations: each draw's replayed terminal states
come from the `replay_buffer` actor (StructureReplayBuffer, per-structure capacity), and each draw's forward
terminal states go back to it through a bounded channel (at most MAX_IN_FLIGHT batches in the object store).

Each evaluation's artifacts (workloads/torsional/export.py): samples.parquet, structures.sdf,
torsions.json, model.pt and one density figure per molecule; the final one also model/, model.pt as an MLflow
pyfunc model (pyfunc.py). The final evaluation draws at least FINAL_EVAL_SAMPLES per (molecule, local
structure), smoke runs included (a few seconds there).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from actors.channel import BoundedInFlight
from actors.energy import EnergyWorker, PoolEnergyFn
from orchestrator.driver import LearnerBufferDriver, bytes_writers, mean_metrics, start_learner
from orchestrator.families.torsional.pyfunc import save_pyfunc
from orchestrator.placement import ACTOR_NAMESPACE, TrialContext
from orchestrator.tracking import TRAIN_HISTORY_KEY
from workloads.torsional.export import save_model, write_samples_parquet
from workloads.torsional.learner import TorsionalLearner
from workloads.torsional.replay import StructureReplayBuffer, replay_rows

MAX_IN_FLIGHT = 2

FINAL_EVAL_SAMPLES = 2_000
"""Histogram metrics of the last evaluation (and whoever rechecks its samples.parquet) need this many samples per
structure not to be dominated by sampling noise; earlier evaluations use config.eval_samples."""


class TorsionalDriver(LearnerBufferDriver):
    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.config = ctx.config
        count = ctx.spec.resources.workers["energy"].count
        self.energy_workers = [
            ray.remote(EnergyWorker)
            .options(**ctx.actor_options("energy", i))
            .remote(self.config.energy_backend, self.config.variant, 1e6, ctx.seed, ctx.cpus("energy"))
            for i in range(count)
        ]
        # By name, not handle: a restarted learner must find the energy actors again (PoolEnergyFn).
        names = [ctx.actor_name("energy", i) for i in range(count)]
        self.learner = start_learner(ctx, TorsionalLearner, energy_fn=PoolEnergyFn(names, namespace=ACTOR_NAMESPACE))
        self.buffer = (
            ray.remote(StructureReplayBuffer)
            .options(**ctx.actor_options("replay_buffer"))
            .remote(self.config.replay.capacity_per_structure, ctx.seed + 1, self.config.replay.seed_share)
        )
        if self.config.replay.enabled and self.config.replay.seed_with_md:  # a restore replaces them
            self.buffer.add_seeds.remote(self.learner.replay_seeds.remote())
        self.to_buffer = BoundedInFlight(MAX_IN_FLIGHT)
        self.step = 0
        self.device = ray.get(self.learner.device.remote())

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        replay = self.config.replay
        num_iters = min(self.config.eval_every, self.config.total_iters - self.step)
        # Not cut further for training curves' points: the learner pipelines batches within a call (batch k+1 is
        # drawn before step k), so a cut would change what it trains on.
        draw = replay.draw_every if replay.enabled else num_iters
        metric_refs, ends = [], []
        for start in range(0, num_iters, draw):
            n = min(draw, num_iters - start)
            # Ordered actor calls: this draw sees every batch added before it; the learner waits only for it.
            replayed = self.buffer.sample.remote(replay_rows(self.config, n)) if replay.enabled else None
            metrics_ref, terminals_ref = self.learner.train.options(num_returns=2).remote(n, replayed)
            metric_refs.append(metrics_ref)
            ends.append(self.step + start + n)
            self.to_buffer.submit(self.buffer.add.remote, terminals_ref)
        train_metrics = ray.get(metric_refs)
        metrics = mean_metrics(train_metrics)
        metrics[TRAIN_HISTORY_KEY] = [[end, m] for end, m in zip(ends, train_metrics)]
        self.to_buffer.drain()
        metrics["train/buffer_size"] = float(ray.get(self.buffer.size.remote()))
        metrics["train/backpressure_s"] = self.to_buffer.blocked_s
        self.step = ray.get(self.learner.step.remote())
        final = self.step >= self.config.total_iters
        num_samples = max(self.config.eval_samples, FINAL_EVAL_SAMPLES) if final else self.config.eval_samples
        evaluation = ray.get(self.learner.evaluate.remote(num_samples))
        learner_state = ray.get(self.learner.get_state.remote())
        metrics.update(evaluation.metrics)
        rows = evaluation.samples
        artifacts = {
            "samples.parquet": lambda path: write_samples_parquet(path, rows),
            "model.pt": lambda path: save_model(path, learner_state),
            # The loadable MLflow model only at the final evaluation, the one a researcher loads (docs/design.md).
            **({"model": lambda path: save_pyfunc(path, learner_state)} if final else {}),
            **bytes_writers(evaluation.files),
            **bytes_writers(evaluation.figures_png),
        }
        return metrics, artifacts

    def actors(self) -> list[Any]:
        return [self.learner, self.buffer, *self.energy_workers]
