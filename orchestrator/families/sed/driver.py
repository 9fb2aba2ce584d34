"""SED trial (arXiv:2409.16797): member actors train the ensemble, the driver coordinates, an evaluator scores.

    ensemble_member actors (count K)  member m lives on actor m mod K with its optimizer; mode "heads": each
                                      actor's heads share one frozen extractor (pretrained on actor 0, copied)
    driver (this process)             the coordinator: draws each step's batch (one ObjectRef for all actors),
                                      active members and pairs; gathers logits; sends each member its update
                                      (hard-sample weights, partner probabilities detached)
    learner bundle                    EnsembleEvaluatorRole: test / shifted / OOD sets; at each report it
                                      evaluates the weights gathered from every member actor

Per step: one `forward` per actor with active members, one blocking gather of their logits, one `backward` per
actor (not awaited: an actor runs its calls in order). Artifacts of each evaluation: ensemble.png (PDS on ID
vs OOD, member accuracies) and predictions.parquet (one row per ID test and OOD image).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from torch import Tensor

from actors.ensemble_member import EnsembleEvaluatorRole, EnsembleMemberRole
from orchestrator.driver import ActorDriver, bytes_writers, mean_metrics
from orchestrator.placement import TrialContext, wait_until_alive
from orchestrator.tracking import TRAIN_HISTORY_KEY
from workloads.ensembles.coordinator import Coordinator, MemberUpdate, StepDraw, member_metrics
from workloads.ensembles.data import train_set

ROLE = "ensemble_member"


class SEDDriver(ActorDriver):
    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.config = config = ctx.config
        count = ctx.spec.resources.workers[ROLE].count
        if count > config.num_members:
            raise ValueError(
                f"resources.workers.{ROLE}.count {count} exceeds num_members {config.num_members}: "
                f"an actor would hold no member"
            )
        self.members = [list(range(k, config.num_members, count)) for k in range(count)]
        heads = config.mode == "heads"
        role = ray.remote(EnsembleMemberRole)
        # Actor 0 builds the training set it pretrains on from the config (while this process builds its own): a
        # restart re-runs the constructor with these arguments, and Ray keeps no ObjectRef among them for that
        # (ray-project/ray#53727).
        self.hosts = [
            role.options(**ctx.actor_options(ROLE, k)).remote(
                config, members, ctx.seed, ctx.cpus(ROLE), pretrain=heads and k == 0
            )
            for k, members in enumerate(self.members)
        ]
        self.coordinator = Coordinator(config, train_set(config), ctx.seed)
        if heads:  # one extractor for every head: actor 0's pretrained one
            extractor = self.hosts[0].weights.remote()
            ray.get([host.load_weights.remote(extractor) for host in self.hosts[1:]])
        self.evaluator = (
            ray.remote(EnsembleEvaluatorRole)
            .options(**ctx.actor_options("learner"))
            .remote(config, ctx.seed, ctx.cpus("learner"))
        )
        self.step = 0
        self.device = ray.get(self.hosts[0].device.remote())
        self.initial_state = self.state()  # what a recovery before the first checkpoint restores

    def advance(self) -> tuple[dict[str, float], dict[str, Callable[[Path], None]]]:
        """Train up to the next evaluation, evaluate; return metrics and artifact writers."""
        num_steps = min(self.config.eval_every, self.config.total_iters - self.coordinator.step)
        step_metrics, result_refs = [], []
        for _ in range(num_steps):
            metrics, refs = self.coordinator.run_step(self._forward, self._backward)
            step_metrics.append(metrics)
            result_refs.append(refs)
        member_step_metrics = [member_metrics([r for rs in ray.get(refs) for r in rs]) for refs in result_refs]
        metrics = mean_metrics(step_metrics + member_step_metrics)
        first = self.step + 1
        self.step = self.coordinator.step
        metrics[TRAIN_HISTORY_KEY] = [
            [first + i, {**a, **b}] for i, (a, b) in enumerate(zip(step_metrics, member_step_metrics))
        ]
        evaluation = ray.get(self.evaluator.evaluate.remote(*[host.weights.remote() for host in self.hosts]))
        metrics.update(evaluation.metrics)
        predictions = evaluation.predictions
        return metrics, {
            "predictions.parquet": lambda path: _write_predictions(path, predictions),
            **bytes_writers(evaluation.figures_png),
        }

    def _active_by_host(self, active: list[int]) -> list[tuple[Any, list[int]]]:
        return [
            (host, [m for m in members if m in active])
            for host, members in zip(self.hosts, self.members)
            if any(m in active for m in members)
        ]

    def _forward(self, draw: StepDraw) -> dict[int, Tensor]:
        batch = ray.put(draw.batch)  # one copy in the object store, read by every member actor
        calls = self._active_by_host(draw.active)
        logits = ray.get([host.forward.remote(batch, members) for host, members in calls])
        return {m: f for (_, members), out in zip(calls, logits) for m, f in zip(members, out)}

    def _backward(self, updates: dict[int, MemberUpdate]) -> list[Any]:
        return [
            host.backward.remote([updates[m] for m in members]) for host, members in self._active_by_host(list(updates))
        ]

    def state(self) -> dict[str, Any]:
        return {
            "coordinator": self.coordinator.state_dict(),
            "hosts": ray.get([host.get_state.remote() for host in self.hosts]),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.coordinator.load_state_dict(state["coordinator"])
        ray.get([host.set_state.remote(s) for host, s in zip(self.hosts, state["hosts"])])
        self.step = self.coordinator.step

    def actors(self) -> list[Any]:
        return [*self.hosts, self.evaluator]

    def recover(self, state: dict[str, Any] | None) -> None:
        """Every member actor back to one consistent checkpoint (the initial state before the first report)."""
        wait_until_alive(self.actors())
        self.load_state(state if state is not None else self.initial_state)


def _write_predictions(path: Path, columns: dict[str, Any]) -> None:
    members = columns["member_predictions"]  # [N, M]
    table = {k: v for k, v in columns.items() if k != "member_predictions"}
    table["member_predictions"] = pa.FixedSizeListArray.from_arrays(members.reshape(-1), members.shape[1])
    pq.write_table(pa.table(table), path)
