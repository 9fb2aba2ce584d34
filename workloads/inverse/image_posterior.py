"""ImageInverseLearner: an amortized posterior p_phi(x | y) ~ p(x) r_y(x) for image inverse problems under a DDPM
prior (RTB for inverse problems, arXiv:2503.09746), trained with relative trajectory balance (arXiv:2405.20971); or
the training-free DPS baseline (Chung et al. 2023, arXiv:2209.14687). The image counterpart of amortized.py.

Measurements y = A(x) + sigma_y n of operators.py, log r_y(x) = -|y - A(x)|^2 / (2 sigma_y^2). Under a latent prior
(latent.py) the chain runs on latents z, the image is x = Dec(z) and r_y is scored on it: log r_y(Dec(z_0)).

Posterior model: image_learner.build_posterior's network (a copy of the prior's UNet, or the frozen prior with LoRA
adapters) whose input conv also reads the measurement channels m(y) through a conv that starts at 0
(image_learner.ClassInputConv), so that at the start p_phi(. | y) = p exactly, for every y:

    m(y)          = [y, M]  (M the inpainting mask; [y] for the other operators)   [B, E, H, W]
                    pixel-unshuffled to the latent's side under a latent prior       [B, E f^2, s, s], f = H / s
    eps_phi       = eps_UNet([x_t, m(y)], t)
    log Z_psi(y)  = amortized.log_z_network on the flattened y, starting at 0

One iteration, B rows: x*_b from the prior's training images, y_b = A(x*_b) + sigma_y n_b, one trajectory
tau_b ~ p_phi(. | y_b) (K strided steps, states detached, sampling std sqrt(var_j + sigma_e^2), scored under var_j):

    delta_b = log Z_psi(y_b) + sum_j log p_phi(x_{j-1} | x_j, y_b) - sum_j log p(x_{j-1} | x_j) - log r_{y_b}(x_0)
    L       = mean_b relu(delta_b^2 - c)                          (objectives.clipped_relative_tb_loss, beta = 1)

With beta_start < 1 the target is tempered at first, p(x) r_y(x)^beta with beta raised linearly to 1 (log r_y
replaced by beta log r_y in delta): its log Z(y) and its posterior start near the prior's.

With guided_share = g > 0, a share g of the iterations draws tau off-policy, from p_phi's chain with DPS's shift of
each step's mean (below), and trains on the same delta (states detached, every log-probability recomputed): RTB's
loss holds for any sampler of full support, and early on DPS reaches the measurement far sooner than p_phi does.

With samples_per_y = k > 1 the batch holds B / k measurements of k trajectories each, and the posterior's delta takes
the k rows' own log Z^(y) = mean_k (log r - log p_phi + log p) (detached; VarGrad, Richter et al. 2020) in place of
log Z_psi(y), which is fitted by the same loss with the posterior detached: early on, a log Z_psi(y) thousands of
nats off leaves the posterior's gradient mostly noise (log r of prior samples is ~ -4,000 at sigma_y = 0.05).

With backtrack_every = n > 0, every n-th iteration trains instead on backtracking pairs (arXiv:2405.20971's
back_and_forth, objectives.backtracking_pair_loss): a chain end z with its own y is noised k levels back by q and
re-denoised by p_phi(. | y) to z', and the residual of the two partial trajectories' difference
(Delta_back - beta log r_y(z)) - (Delta_fwd - beta log r_y(z')) needs neither log Z(y) nor the start's marginal. The
ends are replayed posterior samples (rows [z | y] of the replay-buffer actor), or, without replay, the training
pairs' own x*: under data that the prior fits, x* is an exact sample of p(x | y), the one off-policy sample that an
inverse problem offers for free.

DPS: the prior's chain with its reverse mean shifted by DPS's step (Chung et al.'s Algorithm 1, step size
zeta_j = zeta' / |y - A(x0_hat)|):

    mean_j <- mean_j - zeta' grad_{x_j} |y - A(D(x0_hat(x_j)))|^2 / |y - A(D(x0_hat(x_j)))|

x0_hat through the prior's UNet (clamped to [-1, 1] under clip_x0_hat), D the decoder under a latent prior (so the
gradient runs through it), the identity otherwise. zeta' = 0 is the prior's chain.

Evaluation, on P fixed held-out pairs (x*_p from the test split, y_p drawn with eval_seed), n samples x_pi each:
PSNR and SSIM (image_metrics.py) of the posterior mean xbar_p = mean_i x_pi and of the single samples to x*_p;
mean log r_y; log r_y(x*) of the true image (about -dim(y) / 2: the noise alone); the learned log Z_psi(y_p); the
importance-weighted log Z_iw(y_p) = log mean_i p(tau_pi) r(x_pi) / q(tau_pi) (q the sampler's chain: the posterior,
or DPS's guided chain) and the ELBO; the per-pixel std of the samples; and a grid of x*, y, xbar and samples.

A plain class (no Ray), with the surface of ImageRTBLearner: `train(num_iters, replay)`, `evaluate()`, `state_dict()`
(prior included: resumes bit-identically), `load_state_dict`, `prior_state_dict()`.
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from workloads.checkpoint import restore_training_state, training_state
from workloads.data.images import load_images
from workloads.diffusion.ddpm import DDPM, Guidance, predict_eps
from workloads.diffusion.image_metrics import psnr, ssim
from workloads.diffusion.latent import fit_vae_and_latent_prior, latent_prior_key
from workloads.diffusion.train import LossLog, prior_key, train_ddpm, training_images
from workloads.diffusion.unet import make_unet
from workloads.diffusion.vae import VAE, decode, encode_latents, vae_images
from workloads.inverse.amortized import log_z_network
from workloads.inverse.config import ImageInverseConfig
from workloads.inverse.operators import Inpainting, Measurement
from workloads.objectives import backtracking_pair_loss, clipped_relative_tb_loss, relative_tb_loss
from workloads.rtb.image_config import ImagePosteriorConfig
from workloads.rtb.image_learner import PROGRESS_EVERY, ClassInputConv, build_posterior, sample_grid
from workloads.samplers.learner import keep_freed_memory
from workloads.samplers.replay import TerminalBatch

EVAL_CHUNK = 128
"""Trajectories sampled at once in evaluation."""
GRID_PAIRS = 8
"""Pairs shown in the evaluation figure, one row each."""
GRID_SAMPLES = 6
"""Samples shown per pair, after x*, y and the posterior mean."""


@dataclass
class InverseEvaluation:
    metrics: dict[str, float]
    """eval/...: psnr_mean, ssim_mean (of the posterior mean), psnr_sample, ssim_sample (of single samples), mean_log_r,
    true_log_r (of x*), log_z_iw, elbo, log_ratio (mean log q - log p), sample_std (per-pixel std over the n samples),
    and for rtb log_z (the learned log Z_psi(y), averaged over the pairs)."""
    samples: np.ndarray
    """[P * n, C * H * W] in [-1, 1]: the images (decoded under a latent prior), pair by pair, flattened."""
    sample_pairs: np.ndarray
    """[P * n] the pair index of each sample."""
    figures: dict[str, Figure]
    """'reconstructions': a row per pair: x*, y, the posterior mean, samples."""
    files: dict[str, bytes] = field(default_factory=dict)
    """'per_pair.json': PSNR / SSIM of each pair's mean, mean log r, log Z (learned and importance-weighted);
    'pairs.npz': x_true [P, C, H, W], y [P, ...], samples [P, n, C, H, W]."""


def reconstruction_metrics(samples: Tensor, x_true: Tensor) -> dict[str, float]:
    """PSNR (dB) and SSIM to x_true [P, C, H, W] of the posterior mean of samples [P, n, C, H, W] and of every single
    sample (image_metrics.psnr / ssim: per-image means), and the mean per-pixel std over the n samples."""
    P, n = samples.shape[:2]
    x_mean = samples.mean(1)  # [P, C, H, W]
    singles, targets = samples.flatten(0, 1), x_true.repeat_interleave(n, 0)  # [P * n, C, H, W]
    return {
        "eval/psnr_mean": psnr(x_mean, x_true),
        "eval/ssim_mean": ssim(x_mean, x_true),
        "eval/psnr_sample": psnr(singles, targets),
        "eval/ssim_sample": ssim(singles, targets),
        "eval/sample_std": samples.std(1).mean().item(),
    }


def measurement_image(y: Tensor, fourier: bool) -> Tensor:
    """y [B, C, H, W] as an image in [-1, 1] for display: itself, or log(1 + |F|), centred and scaled per image."""
    if not fourier:
        return y
    shown = torch.fft.fftshift(torch.log1p(y.clamp_min(0)), dim=(-2, -1))
    top = shown.flatten(1).amax(1).clamp_min(1e-8).view(-1, 1, 1, 1)
    return 2 * shown / top - 1


class ImageInverseLearner:
    def __init__(self, config: ImageInverseConfig, seed: int, device: str = "cpu", prior_state: dict | None = None):
        c = self.config = config
        self.seed, self.device = seed, torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.latent = c.prior_space == "latent"
        self.ddpm = DDPM(c.diffusion)
        self.measurement = Measurement(c.operator, c.image_shape)
        self.measurement.operator.to(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.prior_seed)
            self.prior = make_unet(c.diffusion).to(self.device).eval().requires_grad_(False)
            self.vae = VAE(c.vae).to(self.device).eval().requires_grad_(False) if self.latent else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.log_z = log_z_network(math.prod(c.image_shape), c.log_z_hidden).to(self.device)  # y -> [B, 1]
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.step = 0
        self.posterior: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.prior_fit: dict[str, float] | None = None
        """Statistics of the prior's training; None until it is trained (on first use) or loaded."""
        self._train_x: Tensor | None = None
        """The prior's training images (latent: their latents) that x* is drawn from; loaded on first training."""
        self._eval_pairs: tuple[Tensor, Tensor] | None = None
        """(x* [P, C, H, W], y [P, C, H, W]): `eval_pairs()`, drawn on first evaluation."""
        if prior_state is not None:
            self._set_prior(prior_state)

    # ---------------------------------------------------------------- the prior
    def _prior_key(self) -> str:
        c = self.config
        if self.latent:
            return latent_prior_key(c.vae, c.latent_prior, c.prior_seed)
        return prior_key(c.prior, c.prior_seed)

    def _set_prior(self, prior_state: dict) -> None:
        """Loads the prior (and VAE) and builds the posterior from it, with a fresh optimizer."""
        if prior_state["key"] != self._prior_key():
            raise ValueError(f"prior trained under key {prior_state['key']}, but this config needs {self._prior_key()}")
        c = self.config
        self.prior.load_state_dict(prior_state["unet"])
        if self.latent:
            self.vae.load_state_dict(prior_state["vae"])
        self.prior_fit = dict(prior_state["fit"])
        # image_learner's unconditional network from a prior whose input conv reads the measurement channels too
        # (its `classes` conv is zero and trains under LoRA as well)
        prior_in = copy.deepcopy(self.prior)
        with torch.random.fork_rng(devices=[]):  # the zeroed conv's initialisation draws from the global RNG
            prior_in.conv_in = ClassInputConv(prior_in.conv_in, self.condition_channels)
        network = ImagePosteriorConfig(
            reward="mean_intensity", parameterization=c.parameterization, lora_rank=c.lora_rank, lora_alpha=c.lora_alpha
        )
        self.posterior = build_posterior(prior_in, network, c.prior_seed)
        trainable = [p for p in self.posterior.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            [{"params": trainable, "lr": c.lr}, {"params": list(self.log_z.parameters()), "lr": c.lr_log_z}]
        )

    def _ensure_prior(self) -> None:
        """Trains the prior (and VAE) on first use."""
        if self.prior_fit is None:
            self._set_prior(self.trained_prior_state())

    def prior_train_steps(self) -> int:
        """Steps of `trained_prior_state`: the pixel DDPM's, or the VAE's and then the latent DDPM's."""
        c = self.config
        return c.vae.train_iters + c.latent_prior.train_iters if self.latent else c.prior.train_iters

    def trained_prior_state(self, progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
        """{'key', 'unet', 'fit': {fit_s, ...}} (+ 'vae' under a latent prior) of a prior trained from the config;
        progress(steps done, mean loss) every PROGRESS_EVERY of `prior_train_steps()`."""
        c, start, losses = self.config, time.time(), LossLog(progress, PROGRESS_EVERY)
        if self.latent:
            vae, stats, unet = fit_vae_and_latent_prior(c.vae, c.latent_prior, c.prior_seed, self.device, losses)
            fit = {"fit_s": time.time() - start, "vae_psnr": stats.psnr}
            return {"key": self._prior_key(), "unet": unet.state_dict(), "vae": vae.state_dict(), "fit": fit}
        unet = train_ddpm(c.prior, training_images(c.prior), c.prior_seed, losses, device=self.device)
        return {"key": self._prior_key(), "unet": unet.state_dict(), "fit": {"fit_s": time.time() - start}}

    def prior_state_dict(self) -> dict[str, Any]:
        """{'key', 'unet', 'fit'} (+ 'vae'): what another learner with the same prior config takes as `prior_state`
        (a pixel prior's is ImageRTBLearner's format)."""
        self._ensure_prior()
        state = {"key": self._prior_key(), "unet": self.prior.state_dict(), "fit": self.prior_fit}
        if self.latent:
            state["vae"] = self.vae.state_dict()
        return copy.deepcopy(state)

    # ---------------------------------------------------------------- images, measurements, likelihood
    def images(self, split: str) -> Tensor:
        """The data set's images [N, C, H, W] in [-1, 1] of a split (train: the prior's training images)."""
        c = self.config
        if self.latent:
            return vae_images(c.vae, split)
        if split == "train":
            return training_images(c.prior)
        return load_images(c.prior.dataset, c.prior.image_size, split, c.prior.data_root)[0]

    def decode(self, z: Tensor) -> Tensor:
        """The image [B, C, H, W] of chain states z: Dec(z) under a latent prior (differentiable), z otherwise."""
        return decode(self.vae, z) if self.latent else z

    def log_r(self, z: Tensor, y: Tensor) -> Tensor:
        """log r_y(D(z)) [B] of chain states z and measurements y [B, C, H, W]."""
        return self.measurement.log_r(self.decode(z), y)

    @property
    def condition_channels(self) -> int:
        """E (times f^2 under a latent prior): channels of `condition`."""
        C, H, _ = self.config.image_shape
        E = C + isinstance(self.measurement.operator, Inpainting)
        return E * (H // self.ddpm.shape[-1]) ** 2

    def condition(self, y: Tensor) -> Tensor:
        """The posterior's extra input channels m(y) [B, E', h, w] (module docstring)."""
        operator = self.measurement.operator
        if isinstance(operator, Inpainting):
            mask = operator.mask.to(y.dtype).expand(len(y), 1, *y.shape[-2:])  # [B, 1, H, W]
            y = torch.cat([y, mask], 1)  # [B, C + 1, H, W]
        factor = y.shape[-1] // self.ddpm.shape[-1]
        return F.pixel_unshuffle(y, factor) if factor > 1 else y

    def log_z_of(self, y: Tensor) -> Tensor:
        """log Z_psi(y) [B] of y [B, C, H, W]."""
        return self.log_z(y.flatten(1)).squeeze(1)

    # ---------------------------------------------------------------- training
    def rtb_terms(
        self, y: Tensor, generator: torch.Generator, exploration_std: float = 0.0, guided: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One trajectory tau ~ p_phi(. | y) per row of y [B, C, H, W] (guided: with DPS's shift of each step's mean,
        off-policy): (sum log p_phi(tau | y) [B] with gradient, sum log p(tau) [B], log r_y(x_0) [B], log Z_psi(y) [B]
        with gradient, x_0 [B, ...] the chain's end)."""
        extra = self.condition(y)
        guidance = self.guidance(y) if guided else None
        traj = self.ddpm.sample(
            self.posterior, len(y), generator, extra=extra, guidance=guidance, exploration_std=exploration_std
        )
        log_p_post = self.ddpm.log_prob_steps(self.posterior, traj.states, extra).sum(-1)  # [B]
        with torch.no_grad():
            log_p_prior = self.ddpm.log_prob_steps(self.prior, traj.states).sum(-1)  # [B]
            log_r = self.log_r(traj.x0, y)  # [B]
        return log_p_post, log_p_prior, log_r, self.log_z_of(y), traj.x0

    def rtb_loss(self, log_p_post: Tensor, log_p_prior: Tensor, log_r: Tensor, log_z: Tensor) -> Tensor:
        """mean_b relu(delta_b^2 - c) (module docstring); c = 0: mean_b delta_b^2."""
        if self.config.loss_clip == 0:
            return relative_tb_loss(log_p_post, log_p_prior, log_r, log_z)
        return clipped_relative_tb_loss(log_p_post, log_p_prior, log_r, log_z, 1.0, self.config.loss_clip)

    def training_loss(self, log_p_post: Tensor, log_p_prior: Tensor, log_r: Tensor, log_z: Tensor) -> Tensor:
        """The iteration's loss on rows grouped by y, samples_per_y = k consecutive rows each: `rtb_loss` with the
        learned log Z_psi(y) (k = 1), or (k > 1) the sum of `rtb_loss` with the group's detached estimate
        log Z^(y) = mean_k (log r - log p_phi + log p) (the posterior's gradient) and `rtb_loss` with log Z_psi(y)
        and the posterior detached (log Z_psi's gradient)."""
        k = self.config.samples_per_y
        if k == 1:
            return self.rtb_loss(log_p_post, log_p_prior, log_r, log_z)
        log_z_hat = (log_r - log_p_post + log_p_prior).detach().view(-1, k).mean(1).repeat_interleave(k)  # [B]
        posterior_loss = self.rtb_loss(log_p_post, log_p_prior, log_r, log_z_hat)
        return posterior_loss + self.rtb_loss(log_p_post.detach(), log_p_prior, log_r, log_z)

    def training_pairs(self, n: int) -> tuple[Tensor, Tensor]:
        """(x* [n, C, H, W] drawn from the prior's training images, y = A(x*) + sigma_y noise), from the learner's
        generator."""
        if self._train_x is None:
            self._train_x = self.images("train").to(self.device)
        idx = torch.randint(len(self._train_x), (n,), generator=self.generator, device=self.device)
        x_true = self._train_x[idx]
        return x_true, self.measurement.measure(x_true, self.generator)

    def training_starts(self, n: int) -> tuple[Tensor, Tensor]:
        """(chain ends z* [n, ...] of n fresh training pairs' own x*: Enc(x*) under a latent prior, x* otherwise; their
        y [n, C, H, W]): starts of backtracking when nothing is replayed."""
        x_true, y = self.training_pairs(n)
        return (encode_latents(self.vae, x_true) if self.latent else x_true), y

    def _replay_rows(self, replay: Any) -> tuple[Tensor, Tensor] | None:
        """Replayed rows [z | y] (as `train` returns them; an array, or a batch with `.x`) split into (z [N, ...],
        y [N, C, H, W]); None when none."""
        if replay is None:
            return None
        rows = getattr(replay, "x", replay)
        rows = torch.as_tensor(np.array(rows), dtype=torch.float32, device=self.device)
        if not rows.numel():
            return None
        z, y = rows.split([math.prod(self.ddpm.shape), math.prod(self.config.image_shape)], dim=1)
        return z.reshape(-1, *self.ddpm.shape), y.reshape(-1, *self.config.image_shape)

    def backtracking_loss(self, z0: Tensor, y: Tensor, beta: float, exploration_std: float = 0.0) -> Tensor:
        """objectives.backtracking_pair_loss on chain ends z0 [B, ...] with their y [B, C, H, W]: z0 noised k levels
        back by q and re-denoised by p_phi(. | y), both partial trajectories scored under p_phi and p."""
        k, extra = self.config.backtrack_levels, self.condition(y)
        noised, redenoised = self.ddpm.backtrack(
            self.posterior, z0, k, self.generator, extra=extra, exploration_std=exploration_std
        )
        states, start = torch.cat([noised, redenoised.states]), self.ddpm.num_steps - k  # [2B, k + 1, ...]
        log_p_post = self.ddpm.log_prob_steps(self.posterior, states, extra.repeat(2, 1, 1, 1), start_index=start)
        with torch.no_grad():
            log_p_prior = self.ddpm.log_prob_steps(self.prior, states, start_index=start).sum(-1)  # [2B]
            log_r = self.log_r(states[:, -1], y.repeat(2, 1, 1, 1))  # [2B]
        return backtracking_pair_loss(log_p_post.sum(-1), log_p_prior, log_r, beta, self.config.loss_clip)

    def train(self, num_iters: int, replay: Any = None) -> tuple[dict[str, float], TerminalBatch]:
        """`num_iters` RTB iterations (module docstring); (chunk-mean metrics 'train/...', the forward trajectories'
        ends as rows [z | y] (z the chain's end, a latent under a latent prior; y its measurement, flattened) with
        their log r_y, for a replay buffer). dps only advances the step.

        `replay`: rows [z | y] to start backtracking iterations from (backtrack_every); without them those iterations
        start from training pairs' own x*."""
        self._ensure_prior()
        c = self.config
        if c.method != "rtb":
            self.step += num_iters
            return {}, self._terminal_batch([], [], [])
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        replayed, cursor, replayed_iters = self._replay_rows(replay), 0, 0
        logs, forward_logs, terminals, terminal_y, terminal_log_r = [], [], [], [], []
        for _ in range(num_iters):
            expl, beta = c.exploration(self.step), c.beta(self.step)
            if c.backtracks(self.step):
                if replayed is None:
                    z0, y = self.training_starts(c.batch_size)
                else:
                    idx = (cursor + torch.arange(c.batch_size, device=self.device)) % len(replayed[0])  # [B]
                    (z0, y), cursor = (replayed[0][idx], replayed[1][idx]), cursor + c.batch_size
                    replayed_iters += 1
                loss = self.backtracking_loss(z0, y, beta, expl)
            else:
                _, y = self.training_pairs(c.batch_size // c.samples_per_y)
                y = y.repeat_interleave(c.samples_per_y, 0)  # [B, C, H, W], k consecutive rows per y
                log_p_post, log_p_prior, log_r, log_z, x0 = self.rtb_terms(y, self.generator, expl, c.guided(self.step))
                loss = self.training_loss(log_p_post, log_p_prior, beta * log_r, log_z)
                delta = (log_z + log_p_post - log_p_prior - beta * log_r).detach()  # [B]
                log_ratio = (log_p_post - log_p_prior).detach()
                stats = [log_z.detach().mean(), log_r.mean(), log_ratio.mean(), delta.abs().mean()]
                forward_logs.append(torch.stack(stats + [log_r.new_tensor(expl), log_r.new_tensor(beta)]))
                terminals.append(x0)
                terminal_y.append(y)
                terminal_log_r.append(log_r)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(params, c.grad_clip or math.inf)
            if torch.isfinite(grad_norm):
                self.optimizer.step()
            logs.append(torch.stack([loss.detach(), grad_norm]))
            self.step += 1
        names = ("loss", "grad_norm", "log_z", "mean_log_r", "log_ratio", "abs_residual", "exploration_std", "beta")
        every_iteration = torch.stack(logs).mean(0).tolist() if logs else [math.nan] * 2
        forward = torch.stack(forward_logs).mean(0).tolist() if forward_logs else [math.nan] * 6
        metrics = {f"train/{n}": v for n, v in zip(names, every_iteration + forward)}
        metrics["train/backtrack_fraction"] = 1 - len(forward_logs) / max(num_iters, 1)
        metrics["train/replay_fraction"] = replayed_iters / max(num_iters, 1)  # of them, from replayed rows
        return metrics, self._terminal_batch(terminals, terminal_y, terminal_log_r)

    def _terminal_batch(self, x0: list[Tensor], y: list[Tensor], log_r: list[Tensor]) -> TerminalBatch:
        """Rows [z | y] [n, D_z + D_y] with their log r_y [n]."""
        if not x0:
            width = math.prod(self.ddpm.shape) + math.prod(self.config.image_shape)
            return TerminalBatch(np.zeros((0, width), np.float32), np.zeros(0, np.float32))
        rows = torch.cat([torch.cat(x0).flatten(1), torch.cat(y).flatten(1)], 1)
        return TerminalBatch(rows.cpu().numpy(), torch.cat(log_r).cpu().numpy())

    # ---------------------------------------------------------------- sampling
    def guidance(self, y: Tensor) -> Guidance:
        """DPS's shift of the prior's reverse mean for measurements y [N, C, H, W] (module docstring)."""
        s, prior, scale = self.ddpm.schedule, self.prior, self.config.guidance_scale
        clip, kept_timesteps = self.config.diffusion.clip_x0_hat, s.timesteps[1:].to(self.device)  # [K] ascending
        operator = self.measurement.operator

        def shift(x_t: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
            levels = torch.searchsorted(kept_timesteps, t) + 1  # [N]
            with torch.enable_grad():
                x = x_t.detach().requires_grad_(True)
                abar = s.at(s.abar, levels, x)
                x0 = (x - (1 - abar).sqrt() * predict_eps(prior, x, t)) / abar.sqrt()  # x0_hat with its gradient
                x0 = x0.clamp(-1, 1) if clip else x0
                squared = (y - operator(self.decode(x0))).pow(2).flatten(1).sum(1)  # [N] |y - A(D(x0_hat))|^2
                (g,) = torch.autograd.grad(squared.sum(), x)  # [N, ...]
            norm = squared.detach().sqrt().clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
            return -scale * g / norm

        return shift

    @torch.no_grad()
    def sample(self, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """One sample per row of y [N, C, H, W]: (chain ends x_0 [N, ...], log q(tau) [N] of the sampler, log p(tau) [N]
        of the prior), in chunks of EVAL_CHUNK."""
        self._ensure_prior()
        xs, log_qs, log_ps = [], [], []
        for chunk in y.split(EVAL_CHUNK):
            if self.config.method == "rtb":
                traj = self.ddpm.sample(self.posterior, len(chunk), generator, extra=self.condition(chunk))
            else:
                traj = self.ddpm.sample(self.prior, len(chunk), generator, guidance=self.guidance(chunk))
            xs.append(traj.x0)
            log_qs.append(traj.log_prob_steps.sum(-1))
            log_ps.append(self.ddpm.log_prob_steps(self.prior, traj.states).sum(-1))
        return torch.cat(xs), torch.cat(log_qs), torch.cat(log_ps)

    # ---------------------------------------------------------------- evaluation
    def eval_pairs(self) -> tuple[Tensor, Tensor]:
        """(x* [P, C, H, W]: the first P test images, y [P, C, H, W] with the noise of eval_seed): the same for every
        learner of the config's problem."""
        if self._eval_pairs is None:
            c = self.config
            x_true = self.images("test")[: c.eval_pairs].to(self.device)
            g = torch.Generator(device=self.device).manual_seed(c.eval_seed)
            self._eval_pairs = (x_true, self.measurement.measure(x_true, g))
        return self._eval_pairs

    @torch.no_grad()
    def evaluate(self, num_samples: int | None = None) -> InverseEvaluation:
        """The metrics of the module docstring on the held-out pairs, num_samples (default eval_samples_per_pair)
        samples each; deterministic in (seed, step)."""
        c, n = self.config, num_samples or self.config.eval_samples_per_pair
        x_true, y = self.eval_pairs()
        P = len(x_true)
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_033 + self.step)
        y_rows = y.repeat_interleave(n, 0)  # [P * n, C, H, W]
        z, log_q, log_p = self.sample(y_rows, g)
        images = self.decode(z)  # [P * n, C, H, W]
        log_r = self.measurement.log_r(images, y_rows).double().view(P, n)
        log_w = log_p.double().view(P, n) + log_r - log_q.double().view(P, n)  # [P, n]
        log_z_iw = torch.logsumexp(log_w, 1) - math.log(n)  # [P]
        samples = images.view(P, n, *images.shape[1:])
        metrics = reconstruction_metrics(samples, x_true) | {
            "eval/mean_log_r": log_r.mean().item(),
            "eval/true_log_r": self.measurement.log_r(x_true, y).mean().item(),
            "eval/log_z_iw": log_z_iw.mean().item(),
            "eval/elbo": log_w.mean().item(),
            "eval/log_ratio": (log_q - log_p).double().mean().item(),
        }
        x_mean = samples.mean(1)  # [P, C, H, W]
        per_pair = {
            "psnr_mean": [psnr(m[None], x[None]) for m, x in zip(x_mean, x_true)],
            "ssim_mean": [ssim(m[None], x[None]) for m, x in zip(x_mean, x_true)],
            "mean_log_r": log_r.mean(1).tolist(),
            "log_z_iw": log_z_iw.tolist(),
        }
        if c.method == "rtb":
            log_z = self.log_z_of(y).double()  # [P]
            metrics["eval/log_z"] = log_z.mean().item()
            per_pair["log_z"] = log_z.tolist()
        figures = {"reconstructions": self.reconstruction_grid(x_true, y, samples, metrics)}
        npz = io.BytesIO()
        np.savez_compressed(npz, x_true=x_true.cpu().numpy(), y=y.cpu().numpy(), samples=samples.cpu().numpy())
        files = {"per_pair.json": json.dumps(per_pair).encode(), "pairs.npz": npz.getvalue()}
        flat = images.flatten(1).cpu().numpy()
        return InverseEvaluation(metrics, flat, np.repeat(np.arange(P), n), figures, files)

    def reconstruction_grid(self, x_true: Tensor, y: Tensor, samples: Tensor, metrics: dict[str, float]) -> Figure:
        """Rows of the first GRID_PAIRS pairs: x*, y (as an image), the posterior mean, the first GRID_SAMPLES
        samples."""
        rows, shown = min(GRID_PAIRS, len(x_true)), min(GRID_SAMPLES, samples.shape[1])
        fourier = self.config.operator.kind == "fourier_magnitude"
        y_image = measurement_image(y[:rows], fourier)
        columns = [x_true[:rows, None], y_image[:, None], samples[:rows].mean(1, keepdim=True), samples[:rows, :shown]]
        tiles = torch.cat(columns, 1)  # [rows, 3 + shown, C, H, W]
        title = (
            f"{self.config.method} step {self.step} ({self.config.operator.kind}): x*, y, mean, samples; "
            f"PSNR {metrics['eval/psnr_mean']:.2f}, mean log r {metrics['eval/mean_log_r']:.1f}"
        )
        return sample_grid(tiles.flatten(0, 1).cpu().numpy(), title, columns=tiles.shape[1])

    # ---------------------------------------------------------------- checkpointing
    def _checkpointed(self) -> dict[str, nn.Module]:
        return {"posterior": self.posterior, "log_z": self.log_z}

    def state_dict(self) -> dict:
        """A snapshot (deep copy) with the prior (and VAE): restoring needs no retraining."""
        self._ensure_prior()
        state = training_state(self._checkpointed(), self.optimizer, self.step, self.seed, self.generator, self.config)
        return state | {"prior": self.prior_state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._set_prior(state["prior"])
        self.step, self.seed = restore_training_state(
            state, self._checkpointed(), self.optimizer, (self.config.lr, self.config.lr_log_z), self.generator
        )

    @classmethod
    def from_state_dict(cls, state: dict, device: str = "cpu") -> ImageInverseLearner:
        learner = cls(ImageInverseConfig(**state["config"]), seed=state["seed"], device=device)
        learner.load_state_dict(state)
        return learner
