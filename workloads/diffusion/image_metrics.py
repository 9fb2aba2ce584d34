"""Metrics of image samples: a Fréchet distance and a diversity on a classifier's penultimate features (classifier.py),
PSNR and SSIM of reconstructions (inverse problems). Images are in [-1, 1], so the data range is 2.

    FD(a, b)   = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})     Gaussians fitted to the feature sets
    diversity  = 2 / (N (N - 1)) sum_{i < j} (1 - <f_i, f_j> / (|f_i| |f_j|))
    PSNR(x, y) = 10 log10(data_range^2 / MSE(x, y))                          per image, then averaged
    SSIM(x, y) = mean over windows of (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

FD is the FID of Heusel et al. 2017 (arXiv:1706.08500) with our classifier in place of Inception: torchmetrics'
FrechetInceptionDistance computes it, given features directly (an identity "feature extractor"), so that one
pass of the classifier serves both FD and diversity. SSIM: torchmetrics' Gaussian window (11 x 11, sigma 1.5),
C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = data_range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DATA_RANGE = 2.0
"""max - min of images in [-1, 1]."""


class _GivenFeatures(nn.Module):
    """The identity, as FrechetInceptionDistance's feature extractor when the features are computed already."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


@torch.no_grad()
def image_features(classifier: nn.Module, images: Tensor, batch_size: int = 512) -> Tensor:
    """classifier.features(x) [N, F] of images [N, C, H, W] in [-1, 1], in batches, without gradients."""
    return torch.cat([classifier.features(x) for x in images.split(batch_size)])


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """FD between Gaussians fitted (mean, unbiased covariance) to features_a [N, F] and features_b [M, F]; float64."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # ~3 s to import: where a distance is asked for

    metric = FrechetInceptionDistance(feature=_GivenFeatures(features_a.shape[1])).to(features_a.device)
    metric.update(features_a.double(), real=True)
    metric.update(features_b.double(), real=False)
    return metric.compute().item()


def feature_diversity(features: Tensor) -> float:
    """Mean cosine distance 1 - cos(f_i, f_j) over the N (N - 1) / 2 distinct pairs of features [N, F], N >= 2."""
    n = len(features)
    if n < 2:
        raise ValueError(f"diversity needs at least 2 feature vectors, got {n}")
    unit = F.normalize(features.double(), dim=1)  # [N, F]
    similarity = unit @ unit.T  # [N, N]
    mean_off_diagonal = (similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1))
    return 1 - mean_off_diagonal.item()


def psnr(images: Tensor, targets: Tensor) -> float:
    """Mean over images [B, C, H, W] in [-1, 1] of each one's PSNR (dB) to its target; inf where they are equal.
    Not clamped: values outside [-1, 1] count as they are."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(
        images, targets, data_range=DATA_RANGE, reduction="elementwise_mean", dim=(1, 2, 3)
    ).item()


def ssim(images: Tensor, targets: Tensor) -> float:
    """Mean over images [B, C, H, W] in [-1, 1] of each one's SSIM to its target; 1 where they are equal."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(images, targets, data_range=DATA_RANGE).item()
