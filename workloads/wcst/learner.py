"""WCST-ML learner (arXiv:2110.03095): one classifier trained with Adam on the diagonal set (or forced onto a cue),
its off-diagonal accuracies measured after every epoch, its flatness after training.

    train(num_epochs):   for each epoch, shuffled minibatches of B:  theta <- Adam(theta, grad mean CE(f(x), y))
    evaluate():          eval/diagonal_acc, eval/offdiag_acc/<cue> for each cue (workloads/wcst/metrics.py)
    flatness():          flatness/loss and flatness/loss_increase/r_<r> (workloads/wcst/flatness.py)

`step` counts epochs. The surface (`train`, `evaluate`, `state_dict`, `load_state_dict`, `step`) is what
`actors.learner.Learner` wraps into a Ray actor; everything here runs in a plain process too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from workloads.checkpoint import restore_training_state, training_state
from workloads.image_models import build_model
from workloads.wcst.config import WcstConfig
from workloads.wcst.data import wcst_data
from workloads.wcst.flatness import loss_increase
from workloads.wcst.metrics import EVAL_BATCH, cue_accuracies

FLATNESS_SEED_OFFSET = 7_919
"""Flatness directions come from their own generator (seed + this), so probing never shifts training's shuffles."""


@dataclass
class WcstEvaluation:
    metrics: dict[str, float]
    samples: None = None
    """Nothing to sample: a classifier (the field `actors.learner.Learner.evaluate` passes on)."""
    figures: dict[str, Figure] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def flatness_metric(radius: float) -> str:
    """The metric name of Delta L(r), e.g. flatness/loss_increase/r_2 (MLflow names take no '=')."""
    return f"flatness/loss_increase/r_{radius:g}"


class WcstLearner:
    def __init__(self, config: WcstConfig, seed: int, device: str = "cpu"):
        self.config, self.seed, self.device = config, seed, torch.device(device)
        self.data = wcst_data(config, seed).to(self.device)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(seed)
            self.model = build_model(config.architecture, 3, config.resolution, self.data.num_levels).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(seed)  # minibatch order, on the CPU on every device
        self.step = 0

    def train(self, num_epochs: int, replay: None = None) -> tuple[dict[str, float], None]:
        """`num_epochs` passes over the training set; metrics of the last one (and no states for a buffer)."""
        x, y = self.data.train.images, self.data.train.labels
        self.model.train()
        for _ in range(num_epochs):
            start = time.perf_counter()
            order = torch.randperm(len(y), generator=self.generator).to(self.device)
            loss_sum, correct = 0.0, 0
            for i in range(0, len(y), self.config.batch_size):
                batch = order[i : i + self.config.batch_size]
                logits = self.model(x[batch])  # [B, L]
                loss = F.cross_entropy(logits, y[batch])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                loss_sum += float(loss.detach()) * len(batch)
                correct += int((logits.argmax(dim=1) == y[batch]).sum())
            self.step += 1
        metrics = {
            "train/loss": loss_sum / len(y),
            "train/acc": correct / len(y),
            "train/epoch_s": time.perf_counter() - start,
        }
        return metrics, None

    def evaluate(self, num_samples: int | None = None) -> WcstEvaluation:
        """Accuracies on the diagonal and every off-diagonal test set (`num_samples` is unused: sets are fixed);
        after the last epoch also the flatness curve (`flatness`)."""
        metrics = cue_accuracies(self.model, self.data)
        if self.step >= self.config.total_iters:
            metrics.update(self.flatness())
        return WcstEvaluation(metrics)

    def replay_seeds(self) -> None:
        """No replay buffer."""

    @torch.no_grad()
    def training_loss(self, model: nn.Module) -> float:
        """Mean CE over the first `flatness_samples` training images, in eval mode."""
        n = min(self.config.flatness_samples, len(self.data.train))
        x, y = self.data.train.images[:n], self.data.train.labels[:n]
        was_training = model.training
        model.eval()
        total = sum(
            float(F.cross_entropy(model(x[i : i + EVAL_BATCH]), y[i : i + EVAL_BATCH], reduction="sum"))
            for i in range(0, n, EVAL_BATCH)
        )
        model.train(was_training)
        return total / n

    def flatness(self) -> dict[str, float]:
        """flatness/loss (unperturbed) and flatness/loss_increase/r_<r> for every configured radius."""
        c = self.config
        generator = torch.Generator().manual_seed(self.seed + FLATNESS_SEED_OFFSET)
        base, increases = loss_increase(
            self.model, self.training_loss, c.flatness_radii, c.flatness_directions, generator, c.flatness_normalization
        )
        return {"flatness/loss": base, **{flatness_metric(r): value for r, value in increases.items()}}

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        """A snapshot (deep copy): later training does not alter it."""
        return training_state({"model": self.model}, self.optimizer, self.step, self.seed, self.generator, self.config)

    def load_state_dict(self, state: dict) -> None:
        self.step, self.seed = restore_training_state(
            state, {"model": self.model}, self.optimizer, (self.config.lr,), self.generator
        )
