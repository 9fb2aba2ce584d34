"""The learner role: owns a family's model, optimizer and learned log Z; trains and evaluates.

`Learner` wraps a plain learner class of `workloads/` (`PlainLearner` below). It runs on `cuda` when Ray
assigned it a GPU, else on the CPU with as many torch threads as CPUs in its bundle. Its surface is the methods
below and nothing else: drivers never reach into the wrapped learner.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any, Protocol

import ray
import torch


class PlainLearner(Protocol):
    """What a family's learner in `workloads/` implements (built as `cls(config, seed=, device=, **kwargs)`)."""

    step: int

    def train(self, num_iters: int, replay: Any = None) -> tuple[dict[str, float], Any]: ...

    def evaluate(self, num_samples: int | None = None) -> Any:
        """An evaluation with `metrics`, `samples`, `figures` ({name: matplotlib Figure}) and `files`
        ({file name: bytes}, other artifacts)."""

    def replay_seeds(self) -> Any:
        """Terminal states for the replay buffer before any training (None: none)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class LearnerEvaluation:
    """One evaluation as it travels from the learner actor to the driver."""

    metrics: dict[str, float]
    samples: Any
    """The family's samples (an array, or rows), written by its driver."""
    figures_png: dict[str, bytes]
    """Figures rendered as PNG, by artifact file name."""
    files: dict[str, bytes]
    """Other artifacts, by file name."""


def figure_png(figure: Any) -> bytes:
    """A matplotlib figure as PNG bytes, which travel through the object store cheaply."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _file_name(name: str) -> str:
    """A figure's name ('density/CC(=O)O') as a safe artifact file name ('density_CC_=O_O')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


class Learner:
    def __init__(
        self,
        learner_class: type,
        config: Any,
        seed: int,
        num_cpus: float = 1.0,
        learner_kwargs: dict[str, Any] | None = None,
    ):
        gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
        self._device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
        # Fractional CPU bundles still get one thread; more threads than CPUs only thrash.
        torch.set_num_threads(max(1, math.floor(num_cpus)))
        self.learner: PlainLearner = learner_class(config, seed=seed, device=self._device, **(learner_kwargs or {}))

    def ping(self) -> None:
        """Answers once the actor is alive (see `placement.wait_until_alive`)."""

    def device(self) -> str:
        return self._device

    def step(self) -> int:
        return int(self.learner.step)

    def train(self, num_iters: int, replay: Any = None) -> tuple[dict[str, float], Any]:
        """(metrics, terminal states); call with num_returns=2 so the states need not pass through the driver."""
        return self.learner.train(num_iters, replay)

    def evaluate(self, num_samples: int | None = None) -> LearnerEvaluation:
        """Metrics, samples (num_samples, default the config's), figures as PNG and other artifacts."""
        evaluation = self.learner.evaluate(num_samples)
        figures = {f"{_file_name(name)}.png": figure_png(figure) for name, figure in evaluation.figures.items()}
        return LearnerEvaluation(evaluation.metrics, evaluation.samples, figures, dict(evaluation.files))

    def replay_seeds(self) -> Any:
        return self.learner.replay_seeds()

    def get_state(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def set_state(self, state: dict[str, Any]) -> int:
        self.learner.load_state_dict(state)
        return int(self.learner.step)
