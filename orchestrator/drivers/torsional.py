"""Torsional-GFN trial: a Learner actor whose energies come from a pool of energy actors.

The learner (GPU when its bundle has one) samples a batch mixing molecules and local structures;
its energy function sends the batch's conformers to the `energy` actors (RDKit or OpenMM), split
across them and gathered in order (`actors/energy.py`); then it takes the TB / VarGrad step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from actors.energy import EnergyWorker, PoolEnergyFn
from actors.learner import Learner
from orchestrator.drivers import ActorDriver, png_writers
from orchestrator.placement import TrialContext


class TorsionalDriver(ActorDriver):
    learner_class = "workloads.torsional.learner:TorsionalLearner"

    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.config = ctx.config
        count = ctx.spec.resources.workers["energy"].count
        self.energy_workers = [
            ray.remote(EnergyWorker).options(**ctx.actor_options("energy", i)).remote(
                self.config.energy_backend, self.config.variant, 1e6, ctx.seed, ctx.cpus("energy"))
            for i in range(count)
        ]
        self.learner = ray.remote(Learner).options(**ctx.actor_options("learner")).remote(
            self.learner_class, self.config, ctx.seed, ctx.cpus("learner"),
            {"energy_fn": PoolEnergyFn(self.energy_workers)})
        self.step = 0
        self.device = ray.get(self.learner.ping.remote())

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        num_iters = min(self.config.eval_every, self.config.total_iters - self.step)
        metrics_ref, _ = self.learner.train.options(num_returns=2).remote(num_iters, None)
        metrics = dict(ray.get(metrics_ref))
        evaluation = ray.get(self.learner.evaluate.remote())
        self.step = ray.get(self.learner.step.remote())
        metrics.update(evaluation["metrics"])
        rows = evaluation["samples"]
        artifacts = {"samples.parquet": lambda path: _write_samples(path, rows),
                     **png_writers(evaluation["figures_png"])}
        return metrics, artifacts

    def state(self) -> dict[str, Any]:
        return {"learner": ray.get(self.learner.get_state.remote())}

    def load_state(self, state: dict[str, Any]) -> None:
        self.step = ray.get(self.learner.set_state.remote(state["learner"]))

    def actors(self) -> list[Any]:
        return [self.learner, *self.energy_workers]


def _write_samples(path: Path, rows: list) -> None:
    """samples.parquet: smiles, local_structure, torsions (radians), energy_kcal_mol, log_pf."""
    columns = {name: [getattr(row, name) for row in rows]
               for name in ("smiles", "local_structure", "torsions", "energy_kcal_mol", "log_pf")}
    pq.write_table(pa.table(columns), path)
