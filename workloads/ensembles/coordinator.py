"""The coordinator of an SED step: draws the batch, the active members and the pairs, and turns the members'
logits into what each member needs for its share of the gradient (workloads/ensembles/a2d.py):

    draw()                       batch (B images, uniform with replacement), active members, pairs (m, m*)
    every member host            logits f_m(x) of its active members  ->  coordinator
    updates(draw, logits)        w(x) from all active logits (no gradient); per pair yhat = argmax p_m and
                                 each side's partner probabilities, detached  ->  one MemberUpdate per member
    every member host            minimizes its L_m, one optimizer step per member

Members exchange only their logits on the batch; nothing else about the loss needs all of them in one place.
The same class drives the in-process loop (run_local.py) and the Ray driver (orchestrator/families/sed/driver.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from workloads.ensembles.a2d import below_threshold_weights, hard_sample_weights
from workloads.ensembles.config import SEDConfig
from workloads.ensembles.data import Batch


@dataclass
class StepDraw:
    batch: Batch
    active: list[int]
    """Members that train this step, ascending."""
    pairs: list[tuple[int, int]]
    """Disagreement pairs (m, m*) of active members; yhat is m's prediction."""


@dataclass
class PartnerTerm:
    """One pair as seen by one of its members: the other member's probabilities (detached) and the pair's yhat."""

    partner: int
    partner_probs: Tensor  # [B, C]
    predicted: Tensor  # [B] int64


@dataclass
class MemberUpdate:
    """What member `member` needs to minimize its L_m on the step's batch (its own logits it kept)."""

    member: int
    ce_weight: float  # (1 - lam) / A
    disagreement_weight: float  # mu lam / P (0 without pairs)
    sample_weights: Tensor  # [B] w(x)
    terms: list[PartnerTerm]


@dataclass
class MemberStepResult:
    """What a member reports after its step."""

    member: int
    ce: float
    disagreement: float
    """Mean over the member's pairs of mean_x w(x) l(x); 0 without pairs."""
    num_pairs: int


def member_metrics(results: list[MemberStepResult]) -> dict[str, float]:
    """train/member_ce (mean over the step's active members), train/member_ce_max, train/a2d (mean over members
    in a pair of their mean w l)."""
    metrics = {
        "train/member_ce": sum(r.ce for r in results) / len(results),
        "train/member_ce_max": max(r.ce for r in results),
    }
    paired = [r.disagreement for r in results if r.num_pairs]
    if paired:
        metrics["train/a2d"] = sum(paired) / len(paired)
    return metrics


def select_pairs(active: list[int], config: SEDConfig, generator: torch.Generator) -> list[tuple[int, int]]:
    """random_pair: num_random_pairs distinct pairs; all_pairs: every pair; each oriented at random (which side's
    argmax is yhat); none: no pairs."""
    if config.pair_selection == "none" or config.lam == 0 or config.mu == 0:
        return []
    pairs = list(itertools.combinations(active, 2))
    if config.pair_selection == "random_pair":
        pairs = [pairs[i] for i in torch.randperm(len(pairs), generator=generator)[: config.num_random_pairs].tolist()]
    flips = torch.rand(len(pairs), generator=generator) < 0.5
    return [(b, a) if flip else (a, b) for (a, b), flip in zip(pairs, flips.tolist())]


class Coordinator:
    def __init__(self, config: SEDConfig, train: Batch, seed: int):
        self.config, self.train = config, train
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0

    def draw(self) -> StepDraw:
        c, g = self.config, self.generator
        index = torch.randint(len(self.train), (c.batch_size,), generator=g)
        batch = Batch(self.train.images[index], self.train.labels[index])
        active = sorted(torch.randperm(c.num_members, generator=g)[: c.num_active].tolist())
        return StepDraw(batch, active, select_pairs(active, c, g))

    def updates(self, draw: StepDraw, logits: dict[int, Tensor]) -> tuple[dict[int, MemberUpdate], dict[str, float]]:
        """Per active member its MemberUpdate, and the step's ensemble-level training metrics."""
        c = self.config
        stacked = torch.stack([logits[m] for m in draw.active]).detach()  # [A, B, C]
        labels = draw.batch.labels
        if c.sample_weighting == "hard_samples":
            weights = hard_sample_weights(stacked, labels)
        else:
            weights = below_threshold_weights(stacked, labels, c.disagreement_threshold)
        probs = stacked.softmax(-1)
        position = {m: i for i, m in enumerate(draw.active)}
        terms: dict[int, list[PartnerTerm]] = {m: [] for m in draw.active}
        agree = []
        for m, r in draw.pairs:
            predicted = probs[position[m]].argmax(-1)
            # clone: a row of `probs` would pickle the whole [A, B, C] storage on its way to an actor.
            terms[m].append(PartnerTerm(r, probs[position[r]].clone(), predicted))
            terms[r].append(PartnerTerm(m, probs[position[m]].clone(), predicted))
            agree.append((probs[position[r]].argmax(-1) == predicted).float().mean().item())
        ce_weight = (1 - c.lam) / len(draw.active)
        disagreement_weight = c.mu * c.lam / len(draw.pairs) if draw.pairs else 0.0
        updates = {m: MemberUpdate(m, ce_weight, disagreement_weight, weights, terms[m]) for m in draw.active}
        metrics = {
            "train/ensemble_ce": F.cross_entropy(stacked.mean(0), labels).item(),
            "train/sample_weight_max": weights.max().item(),
            "train/sample_weight_mean": weights.mean().item(),
        }
        if agree:
            metrics["train/pair_agreement"] = sum(agree) / len(agree)
        return updates, metrics

    def run_step(
        self, forward: Callable[[StepDraw], dict[int, Tensor]], backward: Callable[[dict[int, MemberUpdate]], Any]
    ) -> tuple[dict[str, float], Any]:
        """One step: forward(draw) -> logits by member; backward(updates) (what it returns is passed on)."""
        draw = self.draw()
        updates, metrics = self.updates(draw, forward(draw))
        result = backward(updates)
        self.step += 1
        return metrics, result

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "rng": self.generator.get_state(), "config": self.config.model_dump()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.generator.set_state(state["rng"])
