"""The ensemble-member role (SED, arXiv:2409.16797) and the evaluator that scores the members' weights.

`EnsembleMemberRole` holds one or several members and their optimizers (`workloads.ensembles.members`: whole
networks, or linear heads on a frozen extractor batched as one einsum). A step is two calls from the
coordinator (the trial's driver): `forward(batch)` -> the members' logits on the step's batch (the batch is one
ObjectRef shared by every member actor), then `backward(updates)` with the partner probabilities (detached) and
hard-sample weights the coordinator derived from everyone's logits; each member applies its share of the A2D
gradient. Ray runs an actor's calls in submission order, so the driver need not wait for `backward` before the
next `forward`.

`EnsembleEvaluatorRole` (the trial's `learner` bundle) holds the test, shifted and OOD sets and evaluates the
members' weights gathered from every member actor; figures travel as PNG bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ray
import torch

from actors.learner import figure_png
from workloads.ensembles.config import SEDConfig
from workloads.ensembles.coordinator import MemberStepResult, MemberUpdate
from workloads.ensembles.data import Batch, train_set
from workloads.ensembles.members import make_host


def _device_and_threads(num_cpus: float) -> str:
    """cuda when Ray assigned a GPU, else the CPU with as many torch threads as CPUs in the bundle (at least 1)."""
    torch.set_num_threads(max(1, math.floor(num_cpus)))
    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    return "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"


@dataclass
class EnsembleEvaluation:
    """One evaluation of the ensemble as it travels from the evaluator actor to the driver."""

    metrics: dict[str, float]
    predictions: dict[str, Any]
    """Columns of predictions.parquet: one row per ID test and OOD image."""
    figures_png: dict[str, bytes]


class EnsembleMemberRole:
    def __init__(self, config: SEDConfig, members: list[int], seed: int, num_cpus: float = 1.0, pretrain: bool = False):
        """`pretrain` (heads mode, first actor only): pretrain the extractor on the training set, built here from
        the config (deterministic in it, as the driver's copy)."""
        self._device = _device_and_threads(num_cpus)
        self.host = make_host(config, members, seed, self._device, train_set(config) if pretrain else None)

    def ping(self) -> None:
        """Answers once the actor is alive."""

    def device(self) -> str:
        return self._device

    def members(self) -> list[int]:
        return self.host.members

    def forward(self, batch: Batch, members: list[int]) -> torch.Tensor:
        """Logits [a, B, C] of `members` (those of this actor active in the step)."""
        return self.host.forward(batch, members)

    def backward(self, updates: list[MemberUpdate]) -> list[MemberStepResult]:
        return self.host.backward(updates)

    def gradients(self) -> dict[int, list[torch.Tensor]]:
        return self.host.gradients()

    def weights(self) -> dict[str, Any]:
        return self.host.weights()

    def load_weights(self, *weights: dict[str, Any]) -> None:
        self.host.load_weights(list(weights))

    def get_state(self) -> dict[str, Any]:
        return self.host.state_dict()

    def set_state(self, state: dict[str, Any]) -> None:
        self.host.load_state_dict(state)


class EnsembleEvaluatorRole:
    def __init__(self, config: SEDConfig, seed: int, num_cpus: float = 1.0):
        # Imported here, not at the top: member actors import this module too and never evaluate (matplotlib).
        from workloads.ensembles.evaluation import Evaluator

        self.evaluator = Evaluator(config, seed, _device_and_threads(num_cpus))

    def ping(self) -> None:
        """Answers once the actor is alive."""

    def evaluate(self, *weights: dict[str, Any]) -> EnsembleEvaluation:
        """Every member actor's `weights()` (as arguments, so Ray resolves their ObjectRefs) -> metrics,
        prediction columns and figures as PNG bytes by file name."""
        evaluation = self.evaluator.evaluate(list(weights))
        figures = {f"{name}.png": figure_png(figure) for name, figure in evaluation.figures.items()}
        return EnsembleEvaluation(evaluation.metrics, evaluation.predictions, figures)
