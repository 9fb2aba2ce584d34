"""Off-diagonal accuracies (workloads/wcst/metrics.py), on hand-built cases: a model that reads only color
scores 1 on color's off-diagonal set and, on another cue's, exactly the share of rows whose color level
happens to equal that cue's level, counted here from the latents."""

import numpy as np
import torch
from torch import Tensor, nn

from workloads.data.color_dsprites import COLORS, LATENT_NAMES
from workloads.wcst.config import WcstConfig
from workloads.wcst.data import wcst_data
from workloads.wcst.metrics import accuracy, cue_accuracies

CONFIG = WcstConfig(cues=("color", "shape", "scale"), train_size=30, test_size=90, resolution=16, supersample=1)


class ColorReader(nn.Module):
    """Logits one-hot at the level of the image's color: the color whose RGB pattern matches the lit channels."""

    def __init__(self, color_levels: np.ndarray):
        super().__init__()
        self.patterns = torch.as_tensor(COLORS[color_levels] > 0)  # [L, 3] lit channels of each level's color

    def forward(self, images: Tensor) -> Tensor:
        lit = images.sum(dim=(2, 3)) > 0  # [B, 3]
        return (lit[:, None, :] == self.patterns[None]).all(dim=2).float()  # [B, L]


def level_of(latents: np.ndarray, cue: str, levels: np.ndarray) -> np.ndarray:
    return np.searchsorted(levels, latents[:, LATENT_NAMES.index(cue)])


def test_accuracy_counts_matches():
    assert accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])) == 0.75


def test_color_reader_scores_one_on_color_and_the_coincidence_rate_elsewhere():
    data = wcst_data(CONFIG, seed=4)
    levels = {
        cue: np.round(np.linspace(0, size - 1, 3)).astype(int)
        for cue, size in (("color", 4), ("shape", 3), ("scale", 6))
    }
    metrics = cue_accuracies(ColorReader(levels["color"]), data)
    assert metrics["eval/diagonal_acc"] == 1.0
    assert metrics["eval/offdiag_acc/color"] == 1.0
    for cue in ("shape", "scale"):
        rows = data.off_diagonal_test[cue]
        assert np.array_equal(level_of(rows.latents, cue, levels[cue]), rows.labels.numpy())  # labels = cue's level
        coincide = float(np.mean(level_of(rows.latents, "color", levels["color"]) == rows.labels.numpy()))
        assert metrics[f"eval/offdiag_acc/{cue}"] == coincide
        assert coincide < 0.5  # the other cues disagree with the label on most rows
    assert metrics["eval/chance_other_cue"] == 0.25  # (L^(K-2) - 1) / (L^(K-1) - 1) for K = L = 3


def test_forced_training_set_adds_that_cues_off_diagonal_rows():
    diagonal = wcst_data(CONFIG, seed=4)
    forced = wcst_data(CONFIG.model_copy(update={"forced_cue": "shape"}), seed=4)
    assert len(diagonal.train) == 30 and len(forced.train) == 60
    shape_levels = np.array([0, 1, 2])
    assert np.array_equal(level_of(forced.train.latents, "shape", shape_levels), forced.train.labels.numpy())
    color = level_of(forced.train.latents, "color", np.array([0, 2, 3]))
    assert (color != forced.train.labels.numpy()).sum() > 0  # off-diagonal rows, where color disagrees
