"""The image cases of the outsourced sampler: f the decoder of a VAE on 8 x 8 digits (z ~ N(0, I) its prior, a 16-d
latent) or a digits DDPM run as the DDIM ODE (z = x_K, 64-d), r(x) = p(c | x) of the RTB family's digits
classifier, c a digit or the even / odd set; or f the decoder of a VAE on 16 x 16 ColorDSprites (64-d latent), r a
classifier of its three shapes. f is not invertible; the exact posterior is the M reference draws
resampled by r(f(z))^beta (noise_target.py). Evaluation of x = f(z):

    eval/mean_log_r           mean log r(f(z)), beside eval/exact_mean_log_r of the exact posterior samples
    eval/fd                   Frechet distance on the classifier's features to the class's training images, beside
                              eval/exact_fd (the exact posterior of this generator: the floor f allows)
    eval/diversity            mean pairwise cosine distance of the features, beside eval/data_diversity
    eval/target_accuracy      fraction of samples the classifier puts in the class (set)
    eval/class_coverage       fraction of the set's classes holding >= 1 % of the samples
    eval/class_tv_to_exact    TV between the predicted-class histograms of f(z) and of the exact samples
"""

from __future__ import annotations

import copy
import io
import time
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from workloads.diffusion import classifier
from workloads.diffusion.ddpm import DDPM
from workloads.diffusion.image_metrics import feature_diversity, frechet_distance, image_features
from workloads.diffusion.train import train_ddpm, training_images
from workloads.diffusion.unet import make_unet
from workloads.diffusion.vae import VAE, train_vae
from workloads.image_models import build_model
from workloads.outsourced.config import VAE_GENERATORS, OutsourcedConfig
from workloads.rtb.image_learner import sample_grid
from workloads.rtb.metrics import total_variation

CLASSIFIER_SEED = 0
"""The RTB family's digits classifier is trained with prior_seed 0: the same r for both families."""
GRID_SAMPLES = 64
COVERAGE_SHARE = 0.01
"""A class of the target set is covered when it holds at least this share of the samples."""


class VAEGenerator(nn.Module):
    """f(z) = Dec(z) for z [B, c, s, s] ~ N(0, I), the VAE's prior (unscaled latents)."""

    def __init__(self, vae: VAE, latent_shape: tuple[int, ...]):
        super().__init__()
        self.vae, self.latent_shape = vae, tuple(latent_shape)

    def forward(self, z: Tensor) -> Tensor:
        return self.vae(z)


class DDIMGenerator(nn.Module):
    """f(z) = the DDIM ODE of a DDPM from x_K = z [B, C, H, W] ~ N(0, I) to x_0 (DDPM.ode_sample)."""

    def __init__(self, unet: nn.Module, ddpm: DDPM):
        super().__init__()
        self.unet, self.ddpm, self.latent_shape = unet, ddpm, ddpm.shape

    def forward(self, z: Tensor) -> Tensor:
        return self.ddpm.ode_sample(self.unet, z)


def digits_generator(config: OutsourcedConfig) -> VAEGenerator | DDIMGenerator:
    """The untrained generator module of the config (its state dict is what trained_image_state returns)."""
    if config.generator in VAE_GENERATORS:
        vae = config.image_generator_config()
        return VAEGenerator(VAE(vae), vae.latent_shape)
    return DDIMGenerator(make_unet(config.prior), DDPM(config.prior))


def trained_image_state(config: OutsourcedConfig, device: torch.device | str = "cpu") -> dict[str, Any]:
    """{'generator', 'classifier' (state dicts), 'latent_shape', 'fit'}: the VAE (vae_seed) or the DDPM (prior_seed,
    as the RTB family trains it) and the classifier."""
    start = time.monotonic()
    images, labels = classifier.labelled_training_images(config.reward_data())
    model, classifier_stats = classifier.train_classifier(
        config.reward_classifier(), images, labels, CLASSIFIER_SEED, "cpu"
    )
    if config.generator in VAE_GENERATORS:
        vae_config = config.image_generator_config()
        vae, stats = train_vae(vae_config, images, config.vae_seed, device)
        generator, generator_fit = (
            VAEGenerator(vae, vae_config.latent_shape),
            {f"vae_{k}": v for k, v in vars(stats).items()},
        )
    else:
        unet = train_ddpm(config.prior, training_images(config.prior), config.prior_seed, device=device)
        generator, generator_fit = DDIMGenerator(unet, DDPM(config.prior)), {}
    fit = generator_fit | {f"classifier_{k}": v for k, v in classifier_stats.items()}
    return {
        "generator": generator.state_dict(),
        "classifier": model.state_dict(),
        "latent_shape": config.latent_shape(),
        "fit": fit | {"fit_s": time.monotonic() - start},
    }


class ImageProblem:
    """Generator, reward and data-space evaluation of an image case (the learner's `problem`)."""

    def __init__(self, config: OutsourcedConfig, state: dict[str, Any], device: torch.device):
        self.generator = digits_generator(config).to(device)
        self.generator.load_state_dict(state["generator"])
        self.generator.eval().requires_grad_(False)
        self.data, self.num_classes = config.reward_data(), config.num_classes()
        K = self.num_classes
        net = build_model(config.reward_classifier().architecture, self.data.channels, self.data.image_size, K)
        net.load_state_dict(state["classifier"])
        self.reward = classifier.ClassifierReward(net, num_classes=K).to(device)
        self.target = torch.tensor(config.target_class, device=device)
        self.members = classifier.class_sets(K)[config.target_class].to(device)  # [K] bool
        self.fit, self.latent_shape, self.device = dict(state["fit"]), list(state["latent_shape"]), device
        self._data_features: Tensor | None = None

    def log_r(self, x: Tensor) -> Tensor:
        """log p(c | x) (c a set: log sum over its classes), x [B, 1, 8, 8] -> [B]."""
        return self.reward.log_r(x, self.target.expand(len(x)))

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "generator": self.generator.state_dict(),
                "classifier": self.reward.classifier.state_dict(),
                "latent_shape": self.latent_shape,
                "fit": self.fit,
            }
        )

    def data_features(self) -> Tensor:
        """The classifier's features [N_c, F] of the training images of the target class (set), computed once."""
        if self._data_features is None:
            images, labels = classifier.labelled_training_images(self.data)
            members = self.members.cpu()[labels]
            self._data_features = image_features(self.reward.classifier, images[members].to(self.device))
        return self._data_features

    @torch.no_grad()
    def evaluate(self, x: Tensor, exact_x: Tensor, title: str) -> tuple[dict, dict[str, Figure], dict[str, bytes]]:
        """(metrics, figures, files) of images x = f(z) [N, 1, 8, 8] against exact posterior images exact_x."""
        features, exact_features = (image_features(self.reward.classifier, images) for images in (x, exact_x))
        data = self.data_features()
        predicted, exact_predicted = (self.reward.classifier(images).argmax(1) for images in (x, exact_x))
        shares = torch.bincount(predicted, minlength=self.num_classes).double() / len(x)  # [K]
        exact_shares = torch.bincount(exact_predicted, minlength=self.num_classes).double() / len(exact_x)
        mean_log_r = self.log_r(x).double().mean().item()
        metrics = {
            "eval/mean_log_r": mean_log_r,
            "eval/exact_mean_log_r": self.log_r(exact_x).double().mean().item(),
            "eval/fd": frechet_distance(data, features),
            "eval/exact_fd": frechet_distance(data, exact_features),
            "eval/diversity": feature_diversity(features),
            "eval/data_diversity": feature_diversity(data),
            "eval/target_accuracy": shares[self.members].sum().item(),
            "eval/exact_target_accuracy": exact_shares[self.members].sum().item(),
            "eval/class_coverage": (shares[self.members] >= COVERAGE_SHARE).double().mean().item(),
            "eval/class_tv_to_exact": total_variation(shares, exact_shares),
        }
        images, exact_images = x.cpu().numpy(), exact_x.cpu().numpy()
        figures = {
            "samples": sample_grid(images[:GRID_SAMPLES], f"{title}: mean log r {mean_log_r:.3f}"),
            "exact_samples": sample_grid(exact_images[:GRID_SAMPLES], "exact posterior (resampled reference draws)"),
        }
        npz = io.BytesIO()
        np.savez_compressed(npz, images=images, predicted=predicted.cpu().numpy())
        return metrics, figures, {"images.npz": npz.getvalue()}
