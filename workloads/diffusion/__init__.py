"""DDPM image priors (Ho et al. 2020, arXiv:2006.11239), plain PyTorch and diffusers, shared by the image families.

config.py    DDPMConfig: data set, UNet shape, noise schedule, training, strided sampling, optional hub weights
schedule.py  StridedSchedule: K kept timesteps, the exact forward steps and the Gaussian reverse steps between them
unet.py      eps_theta: a diffusers UNet2DModel built from the config, optional conditioning channels
ddpm.py      DDPM: the epsilon loss, `sample` (trajectories with per-step log-densities), `log_prob_steps`
             (re-scoring with gradient), `noise_back` (forward noising for backtracking)
train.py     training_images, train_ddpm (AdamW, warm-up + cosine, seeded) and prior_key (a trained prior's cache key)
"""

from workloads.diffusion.config import DDPMConfig
from workloads.diffusion.ddpm import DDPM, Trajectory, gaussian_log_prob
from workloads.diffusion.schedule import StridedSchedule
from workloads.diffusion.train import prior_key, train_ddpm, training_images
from workloads.diffusion.unet import LORA_TARGETS, build_unet, make_unet

__all__ = [
    "DDPM",
    "LORA_TARGETS",
    "DDPMConfig",
    "StridedSchedule",
    "Trajectory",
    "build_unet",
    "gaussian_log_prob",
    "make_unet",
    "prior_key",
    "train_ddpm",
    "training_images",
]
