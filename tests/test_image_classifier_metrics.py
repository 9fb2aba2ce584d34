"""The digits classifier (reward and feature map of RTB's image posteriors) and the image metrics, against exact
answers: closed-form Fréchet distances of Gaussians, a direct O(N^2) diversity, PSNR / SSIM by their formulas."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from workloads.diffusion.classifier import (
    ClassifierConfig,
    ClassifierReward,
    class_sets,
    labelled_training_images,
    target_index,
    train_classifier,
)
from workloads.diffusion.config import DDPMConfig
from workloads.diffusion.image_metrics import (
    DATA_RANGE,
    feature_diversity,
    frechet_distance,
    image_features,
    psnr,
    ssim,
)
from workloads.diffusion.train import training_images

EVEN, ODD = [0, 2, 4, 6, 8], [1, 3, 5, 7, 9]


@pytest.fixture(scope="module")
def digits():
    return labelled_training_images(DDPMConfig(), seed=0)  # [1259, 1, 16, 16], [1259]


@pytest.fixture(scope="module")
def trained(digits):
    return train_classifier(ClassifierConfig(), *digits, seed=0)


# ---------------------------------------------------------------- Fréchet distance


def _gaussian(dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(size=(dim, dim))
    return rng.normal(size=dim), a @ a.T / dim + 0.5 * np.eye(dim)


def test_frechet_distance_of_gaussian_clouds_is_the_closed_form():
    rng = np.random.default_rng(0)
    (mu1, s1), (mu2, s2) = _gaussian(4, rng), _gaussian(4, rng)
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    n = 50_000
    a = torch.from_numpy(rng.multivariate_normal(mu1, s1, size=n))
    b = torch.from_numpy(rng.multivariate_normal(mu2, s2, size=n))
    # sampling error of the means and covariances: O(sqrt(D / n)) ~ 0.01 on FD ~ 1.4 (mean term alone 0.39)
    assert exact > 1
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.02)
    assert frechet_distance(a.float(), b.float()) == pytest.approx(exact, rel=0.02)


def test_frechet_distance_of_a_set_to_itself_is_zero_and_a_shift_is_its_square():
    features = torch.randn(500, 16, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.1, 3, 16)
    assert frechet_distance(features, features) == pytest.approx(0, abs=1e-8)
    shift = torch.linspace(-1, 1, 16)
    assert frechet_distance(features, features + shift) == pytest.approx(shift.square().sum().item(), rel=1e-6)


# ---------------------------------------------------------------- diversity


def test_diversity_is_the_mean_pairwise_cosine_distance():
    features = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    f = features.numpy().astype(np.float64)
    distances = [
        1 - f[i] @ f[j] / (np.linalg.norm(f[i]) * np.linalg.norm(f[j]))
        for i in range(len(f))
        for j in range(i + 1, len(f))
    ]
    assert feature_diversity(features) == pytest.approx(np.mean(distances), abs=1e-6)


def test_diversity_of_identical_vectors_is_zero_and_of_orthogonal_ones_is_one():
    assert feature_diversity(torch.tensor([[1.0, 2.0, 3.0]]).repeat(10, 1)) == pytest.approx(0, abs=1e-12)
    assert feature_diversity(torch.eye(5) * 3) == pytest.approx(1, abs=1e-12)
    with pytest.raises(ValueError):
        feature_diversity(torch.ones(1, 3))


# ---------------------------------------------------------------- PSNR, SSIM


def test_psnr_and_ssim_of_identical_images():
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert psnr(x, x) == math.inf
    assert ssim(x, x) == pytest.approx(1, abs=1e-6)


def test_psnr_is_the_mean_of_per_image_psnr():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    sigma = torch.tensor([0.05, 0.1, 0.2])[:, None, None, None]
    y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    mse = (x - y).square().mean(dim=(1, 2, 3)).double()  # [3]
    assert psnr(y, x) == pytest.approx(torch.mean(10 * torch.log10(DATA_RANGE**2 / mse)).item(), rel=1e-5)
    assert psnr(x + 0.1, x) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-5)  # MSE = 0.1^2


def test_ssim_of_constant_images_is_the_luminance_term():
    """Variances and covariance vanish: SSIM = (2 a b + C1) / (a^2 + b^2 + C1), C1 = (0.01 data_range)^2."""
    a, b = 0.3, -0.2
    c1 = (0.01 * DATA_RANGE) ** 2
    x, y = torch.full((2, 1, 16, 16), a), torch.full((2, 1, 16, 16), b)
    assert ssim(x, y) == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), rel=1e-4)


# ---------------------------------------------------------------- classifier


def test_labelled_training_images_are_the_prior_training_images(digits):
    images, labels = digits
    assert torch.equal(images, training_images(DDPMConfig(), seed=0))
    assert labels.shape == (len(images),) and set(labels.tolist()) == set(range(10))


def test_classifier_is_accurate_and_deterministic_in_seed(digits, trained):
    model, stats = trained
    assert stats["heldout_accuracy"] >= 0.9
    assert stats["num_heldout"] == round(0.15 * len(digits[0]))
    again, _ = train_classifier(ClassifierConfig(epochs=2), *digits, seed=0)
    other, _ = train_classifier(ClassifierConfig(epochs=2), *digits, seed=1)
    with torch.no_grad():  # as when a reward is built lazily inside an evaluation: training still trains
        once_more, _ = train_classifier(ClassifierConfig(epochs=2), *digits, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(again.state_dict().values(), once_more.state_dict().values()))
    assert not torch.equal(again.head.weight, other.head.weight)


def test_features_separate_classes(digits, trained):
    """FD on the classifier's features: two halves of one digit's images are closer than two digits."""
    images, labels = digits
    features = image_features(trained[0], images)  # [N, F]
    zeros, ones = features[labels == 0], features[labels == 1]
    half = len(zeros) // 2
    assert frechet_distance(zeros[:half], zeros[half:]) < 0.2 * frechet_distance(zeros, ones)
    assert feature_diversity(features) > feature_diversity(zeros)


# ---------------------------------------------------------------- reward


def test_targets_and_class_sets():
    sets = class_sets(10)
    assert sets.shape == (12, 10)
    assert torch.equal(sets[:10], torch.eye(10, dtype=torch.bool))
    assert sets[target_index("even", 10)].nonzero().flatten().tolist() == EVEN
    assert sets[target_index("odd", 10)].nonzero().flatten().tolist() == ODD
    assert target_index(7, 10) == 7
    for bad in (10, -1, "prime"):
        with pytest.raises(ValueError):
            target_index(bad, 10)


def test_log_r_is_the_log_probability_of_the_class_or_set(digits, trained):
    images, labels = digits
    reward = ClassifierReward(trained[0], num_classes=10)
    x = images[:16]
    log_p = torch.log_softmax(trained[0](x), dim=-1)  # [16, 10]
    assert torch.allclose(reward.log_r(x, labels[:16]), log_p.gather(1, labels[:16, None])[:, 0], atol=1e-6)
    even, odd = torch.full((16,), 10), torch.full((16,), 11)
    assert torch.allclose(reward.log_r(x, even), torch.logsumexp(log_p[:, EVEN], dim=-1), atol=1e-6)
    assert torch.allclose(torch.logaddexp(reward.log_r(x, even), reward.log_r(x, odd)), torch.zeros(16), atol=1e-5)


def test_log_r_is_differentiable_in_x(digits, trained):
    images, labels = digits
    reward = ClassifierReward(trained[0], num_classes=10)
    targets = torch.tensor([3, 10, 11, 0])
    x = images[:4].clone().requires_grad_(True)
    reward.log_r(x, targets).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()
    assert torch.allclose(reward.grad_log_r(images[:4], targets), x.grad, atol=1e-6)
    assert all(not p.requires_grad for p in reward.parameters())
    # a step up the gradient raises log r: the gradient is that of this reward
    step = images[:4] + 1e-3 * x.grad / x.grad.flatten(1).norm(dim=1)[:, None, None, None]
    assert (reward.log_r(step, targets) > reward.log_r(images[:4], targets)).all()
