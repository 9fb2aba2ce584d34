"""Typed configuration of the SED workload (Scalable Ensemble Diversification, arXiv:2409.16797); defaults in one place.

    loss = (1 - lam) mean_{m active} CE(f_m(x), y) + mu lam mean_{pairs} mean_x [w(x) A2D_pair(x)]

A sweep file's `config:` block may only override fields that exist here (unknown keys are errors).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from workloads.data.corruptions import CORRUPTIONS
from workloads.typed_config import StrictConfig

DEFAULT_RESOLUTION = {"colordsprites": 16, "digits": 8}
RESOLUTIONS = {"colordsprites": (16, 32, 64), "digits": (8, 16, 32)}
DEFAULT_HELD_OUT = {"colordsprites": [2], "digits": [8, 9]}
"""Semantic OOD by default: hearts (shape 2) for ColorDSprites, the digits 8 and 9."""
NUM_LABELS = {"colordsprites": 3, "digits": 10}
"""Labels before the hold-out: ColorDSprites' shapes, the ten digits."""


class SEDConfig(StrictConfig):
    """An ensemble of M members trained together on one image classification task with a held-out label set."""

    # ------------------------------------------------------------ data
    dataset: Literal["colordsprites", "digits"] = "colordsprites"
    """colordsprites: classify the shape (square / ellipse / heart) whatever the color, scale, orientation and
    position; digits: scikit-learn's 8 x 8 digits."""
    resolution: Literal[8, 16, 32, 64] | None = None
    """Image side; None: 16 for colordsprites (16, 32, 64 allowed), 8 for digits (8, 16, 32). Read `image_size`."""
    held_out_labels: list[int] | None = None
    """Labels never trained on, the semantic-OOD set; None: [2] (hearts) / [8, 9]. Read `held_out`."""
    num_train: int = Field(6000, gt=0)
    """colordsprites: in-distribution training images (digits: its whole train split, ~1,000 after the hold-out)."""
    num_test: int = Field(1000, gt=0)
    """colordsprites: in-distribution test images, also the base of every corrupted set (digits: its test split)."""
    num_ood: int = Field(1000, gt=0)
    """colordsprites: held-out-shape images (digits: every image of the held-out classes)."""
    data_seed: int = 0
    """Which latents are drawn / how the digits are split, and the corruption noise; the same for every trial."""
    corruptions: list[str] = list(CORRUPTIONS)
    """Covariate shifts of the in-distribution test set (workloads/data/corruptions.py)."""
    severities: list[int] = [1, 5]

    # ------------------------------------------------------------ ensemble
    architecture: Literal["resnet20", "convnet", "mlp", "vit"] = "mlp"
    """A model of `workloads.image_models.build_model` (heads mode: the extractor's)."""
    mode: Literal["full", "heads"] = "full"
    """full: M whole networks; heads: M linear heads on one frozen feature extractor, pretrained briefly here
    (pretrain_iters of plain cross-entropy on the training set) and batched as one einsum."""
    num_members: int = Field(5, ge=2)
    """M."""
    active_members: int | None = Field(None, ge=2)
    """Members drawn at random to train at each step (forward, CE and disagreement); None: all M. The reference's
    `random_select: 2` makes only the pair active, so a step costs 2 members' compute whatever M."""
    shared_init: bool = False
    """All members start from the same weights (a weight soup is then meaningful); heads: every head starts as the
    pretrained extractor's own head. With shared_init and no disagreement term the members see the same batches
    and stay identical."""
    pretrain_iters: int = Field(300, ge=0)
    """heads mode: iterations of CE training of the feature extractor (with one linear head) before it is frozen."""

    # ------------------------------------------------------------ loss
    lam: float = Field(0.5, ge=0, le=1)
    """lambda: (1 - lambda) weighs the CE term, lambda the disagreement term."""
    mu: float = Field(0.5, ge=0)
    """mu: extra scale of the disagreement term (the reference's manual_lambda)."""
    pair_selection: Literal["random_pair", "all_pairs", "none"] = "random_pair"
    """random_pair: num_random_pairs random pairs of active members per step (SED); all_pairs: every pair of active
    members (the exhaustive pairwise baseline); none: no disagreement term (a plain deep ensemble, as mu = 0)."""
    num_random_pairs: int = Field(1, ge=1)
    sample_weighting: Literal["hard_samples", "below_threshold"] = "hard_samples"
    """hard_samples: w(x) = CE(mean_m logits_m(x), y) / (batch mean of that CE)^2, no gradient (SED);
    below_threshold: w(x) = 1 when some active member gives the true class p <= disagreement_threshold, else 0."""
    disagreement_threshold: float = Field(0.5, gt=0, lt=1)
    a2d_eps: float = Field(1e-6, gt=0)
    """eps inside the log of the A2D loss."""

    # ------------------------------------------------------------ optimization and evaluation
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)
    """Adam learning rate of every member (and of the extractor's pretraining)."""
    total_iters: int = Field(1500, gt=0)
    eval_every: int = Field(500, gt=0)
    """Iterations between evaluations; each evaluation is one Tune report and checkpoint."""
    eval_batch_size: int = Field(1000, gt=0)
    """Images per forward pass in evaluation."""

    @property
    def image_size(self) -> int:
        return self.resolution if self.resolution is not None else DEFAULT_RESOLUTION[self.dataset]

    @property
    def held_out(self) -> list[int]:
        """Resolved on read (not stored by a validator): a sweep may sample `dataset` after the base config."""
        return sorted(self.held_out_labels) if self.held_out_labels is not None else DEFAULT_HELD_OUT[self.dataset]

    @property
    def num_classes(self) -> int:
        return NUM_LABELS[self.dataset] - len(self.held_out)

    @property
    def in_channels(self) -> int:
        return 3 if self.dataset == "colordsprites" else 1

    @property
    def num_active(self) -> int:
        return self.active_members if self.active_members is not None else self.num_members

    @property
    def soup_is_meaningful(self) -> bool:
        """A uniform weight soup needs members that share an initialization; linear heads on one extractor always
        average to the mean-logit ensemble."""
        return self.shared_init or self.mode == "heads"

    @model_validator(mode="after")
    def _consistent(self) -> SEDConfig:
        if self.image_size not in RESOLUTIONS[self.dataset]:
            raise ValueError(
                f"resolution {self.image_size} is not available for {self.dataset}: "
                f"choose one of {RESOLUTIONS[self.dataset]}"
            )
        labels = NUM_LABELS[self.dataset]
        held = self.held_out
        if len(set(held)) != len(held) or not all(0 <= h < labels for h in held) or labels - len(held) < 2:
            raise ValueError(
                f"held_out_labels {held} must be distinct labels in 0..{labels - 1} of {self.dataset} "
                f"that leave at least 2 classes to train on"
            )
        unknown = sorted(set(self.corruptions) - set(CORRUPTIONS))
        if unknown:
            raise ValueError(f"unknown corruptions {unknown}; known: {sorted(CORRUPTIONS)}")
        if not all(1 <= s <= 5 for s in self.severities):
            raise ValueError(f"severities must lie in 1..5, got {self.severities}")
        if self.active_members is not None and self.active_members > self.num_members:
            raise ValueError(f"active_members {self.active_members} exceeds num_members {self.num_members}")
        num_pairs = self.num_active * (self.num_active - 1) // 2
        if self.pair_selection == "random_pair" and self.num_random_pairs > num_pairs:
            raise ValueError(
                f"num_random_pairs {self.num_random_pairs} exceeds the {num_pairs} pairs of "
                f"{self.num_active} active members"
            )
        return self

    def smoke(self) -> SEDConfig:
        """A few iterations on small sets: a whole-stack check in seconds."""
        return self.model_copy(
            update={
                "total_iters": 20,
                "eval_every": 10,
                "num_train": 512,
                "num_test": 200,
                "num_ood": 200,
                "batch_size": 64,
                "pretrain_iters": min(self.pretrain_iters, 20),
            }
        )
