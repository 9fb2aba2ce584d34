"""The learner role: owns a workload's model, optimizer and learned log Z; samples and trains.

`Learner` wraps any plain learner class of `workloads/` that has `train`, `evaluate(num_samples)`,
`state_dict`, `load_state_dict` and `step`. It runs on `cuda` when Ray assigned it a GPU,
else on the CPU with as many torch threads as CPUs in its bundle.
"""
from __future__ import annotations

import importlib
import io
import math
import re
from typing import Any

import ray
import torch


def import_object(path: str) -> Any:
    """'package.module:Name' -> the object."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


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
    def __init__(self, learner_class: str, config: Any, seed: int, num_cpus: float = 1.0,
                 learner_kwargs: dict[str, Any] | None = None):
        gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
        self.device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
        # Fractional CPU bundles still get one thread; more threads than CPUs only thrash.
        torch.set_num_threads(max(1, math.floor(num_cpus)))
        self.learner = import_object(learner_class)(config, seed=seed, device=self.device, **(learner_kwargs or {}))

    def ping(self) -> str:
        return self.device

    def step(self) -> int:
        return int(self.learner.step)

    def train(self, num_iters: int, replay: Any = None) -> tuple[dict[str, float], Any]:
        """Returns (metrics, terminal states); call with num_returns=2 so states skip the caller."""
        return self.learner.train(num_iters, replay)

    def evaluate(self, num_samples: int | None = None) -> dict[str, Any]:
        """metrics, samples (num_samples, default the config's), and the figure(s) as PNG bytes by file name."""
        evaluation = self.learner.evaluate(num_samples)
        return {"metrics": evaluation.metrics, "samples": evaluation.samples,
                "figures_png": {f"{_file_name(name)}.png": figure_png(figure) for name, figure in evaluation.figures.items()}}

    def attribute(self, name: str) -> Any:
        """A public attribute of the wrapped learner (e.g. the torsional learner's `entries`, for artifacts)."""
        if name.startswith("_"):
            raise AttributeError(f"{name!r} is private to {type(self.learner).__name__}")
        return getattr(self.learner, name)

    def call(self, method: str, *args: Any) -> Any:
        """A public method of the wrapped learner that only one workload has (e.g. `md_seed_terminals`)."""
        return self.attribute(method)(*args)

    def get_state(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def set_state(self, state: dict[str, Any]) -> int:
        self.learner.load_state_dict(state)
        return int(self.learner.step)
