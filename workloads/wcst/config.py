"""Typed configuration of the WCST-ML shortcut-cue study (arXiv:2110.03095); defaults in one place.

A trial trains one model (architecture, cue set, seed) for `total_iters` epochs, either on the diagonal set alone
(the model picks its cue; which one is the measurement) or forced onto one cue (diagonal + that cue's
off-diagonal training split). A sweep file's `config:` block may only override fields that exist here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from workloads.data.color_dsprites import ColorDSpritesConfig
from workloads.data.cue_conflict import CueConflictConfig, SplitSizes
from workloads.typed_config import StrictConfig


class WcstConfig(StrictConfig):
    """One WCST-ML model: which cues conflict, how it is trained, and how flatness is probed at the end."""

    cues: tuple[str, ...] = ("color", "shape", "scale")
    """Chosen cues (keys of `workloads.data.cue_conflict.CUES`); every one is a candidate shortcut."""
    num_levels: int | None = Field(None, ge=2)
    """L, the classes; None: the fewest values among the cues (3 for color, shape, scale)."""
    off_diagonal_excludes_diagonal: bool = True
    """Off-diagonal sets hold no point with every cue at one level (the paper's "not on the diagonal"). A model
    following another cue then scores (L^(K-2) - 1) / (L^(K-1) - 1) there (1/4 for K = L = 3), not 1/L."""
    architecture: Literal["resnet20", "convnet", "mlp", "vit"] = "convnet"
    """A model of `workloads.image_models.build_model`."""
    forced_cue: str | None = None
    """None: train on the diagonal set. A cue of `cues`: train on the diagonal plus that cue's off-diagonal
    training split, where only that cue predicts the label (a model forced onto it)."""
    lr: float = Field(1e-3, gt=0)
    """Adam's learning rate."""
    batch_size: int = Field(256, gt=0)
    total_iters: int = Field(10, gt=0)
    """Epochs: passes over the training set (a WCST step is one epoch); off-diagonal accuracies are measured (and
    reported) after each."""
    train_size: int = Field(10_000, gt=0)
    """Rows of the diagonal training split, and of each off-diagonal one (the paper: 10k)."""
    test_size: int = Field(2_000, gt=0)
    """Rows of the diagonal and of each off-diagonal test split, on which accuracies are measured."""
    resolution: Literal[64, 32, 16] = 32
    """Image side. 64 is the paper's; 32 keeps a CPU epoch short while the smallest shape is still ~5 px wide
    (at 16 it is ~2.5 px, and shape could no longer compete as a cue)."""
    supersample: int = Field(4, ge=1, le=8)
    """Anti-aliasing sub-samples per side of a 64 x 64 canvas pixel (see `ColorDSpritesConfig`)."""
    data_seed: int | None = None
    """Seed of the cue-conflict draw; None: the trial's seed (each seed its own data, as in the paper)."""
    flatness_radii: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
    """r: norms of the random weight perturbations at which the loss increase is measured after training. The
    range spans where it grows from ~0 to large: ~4-32 for the ConvNet, ~16-128 for the MLP (its weights are many)."""
    flatness_directions: int = Field(5, gt=0)
    """Random directions per radius; the reported loss increase is their mean."""
    flatness_samples: int = Field(1_000, gt=0)
    """Training images (the first of the shuffled training set) on which the perturbed loss is measured."""
    flatness_normalization: Literal["global", "per_parameter"] = "global"
    """global: one direction over all weights with ||delta|| = r (the paper's sphere in weight space);
    per_parameter: every parameter tensor's own slice of the direction rescaled to norm r."""

    @model_validator(mode="after")
    def _forced_cue_is_chosen(self) -> WcstConfig:
        self.cue_conflict()  # validates cues and num_levels with the data module's own rules
        if self.forced_cue is not None and self.forced_cue not in self.cues:
            raise ValueError(f"forced_cue {self.forced_cue!r} is not one of the chosen cues {list(self.cues)}")
        return self

    def cue_conflict(self, seed: int = 0) -> CueConflictConfig:
        """The data module's config of this trial's sets (no validation split: nothing is selected on it)."""
        sizes = SplitSizes(train=self.train_size, val=0, test=self.test_size)
        return CueConflictConfig(
            cues=self.cues,
            num_levels=self.num_levels,
            diagonal=sizes,
            off_diagonal=sizes,
            off_diagonal_excludes_diagonal=self.off_diagonal_excludes_diagonal,
            seed=seed if self.data_seed is None else self.data_seed,
        )

    def images(self) -> ColorDSpritesConfig:
        return ColorDSpritesConfig(resolution=self.resolution, supersample=self.supersample)

    def smoke(self) -> WcstConfig:
        """The same study, tiny: a whole-stack check in seconds per trial."""
        return self.model_copy(
            update={
                "total_iters": 2,
                "train_size": 512,
                "test_size": 192,
                "resolution": 16,
                "supersample": 2,
                "flatness_radii": (0.0, 1.0, 4.0),
                "flatness_directions": 2,
                "flatness_samples": 192,
            }
        )
