"""ImageRTBLearner: fine-tunes a DDPM prior p (workloads/diffusion/) into class-conditional posteriors
p_post(x | c) ~ p(x) r(x, c)^beta with relative trajectory balance (arXiv:2405.20971), or runs a baseline.

The prior is trained on first use (train_ddpm), or given as `prior_state` (a cached one). The posterior eps_phi is a
copy of the prior's UNet (`copy`) or the frozen prior with peft LoRA adapters on its attention (`lora`, B = 0 at the
start). With several targets it reads the target's one-hot code as extra input channels through a conv that starts
at 0 (and trains, also under LoRA; ClassInputConv): at the start p_post = p exactly, for every c. With one target
the posterior is that target's alone (the reference trains one model per class) and has no extra input. One
iteration s, rows b = 0..B-1 for targets c_b = targets[b mod len(targets)], K strided steps:

    rtb, forward:      tau ~ p_post(. | c) with sampling std sqrt(var_j + sigma_e(s)^2) (states detached)
        delta = log Z(c) + sum_j log p_post(x_{j-1} | x_j, c) - sum_j log p(x_{j-1} | x_j) - beta log r(x_0, c)
        loss  = mean_b relu(delta_b^2 - clip)                    (clip = 0: mean delta^2)
    rtb, backtracking: (every replay_every-th iteration when `train` is given replay samples x)
        x_{K-k} <- q noising x back k levels (tau_back: x_{K-k} -> .. -> x, the noising chain read in reverse)
        tau_fwd ~ p_post(. | c) from the same x_{K-k} down to x'
        Both satisfy log p_post(x_{K-k} | c) + log Z(c) + Delta(tau) = log p(x_{K-k}) + beta log r(x_0(tau), c) at the
        optimum (Delta = sum log p_post - sum log p over the partial trajectory); the unknown marginal ratio
        p_post(x_{K-k} | c) / p(x_{K-k}) and log Z(c) cancel in the difference of the two:
        delta = (Delta(tau_back) - beta log r(x, c)) - (Delta(tau_fwd) - beta log r(x', c)), loss as above.
        (The reference's back_and_forth, with beta; it trains on both partial trajectories through the pair.)
    rl / rl_kl:        tau ~ p_post on-policy; REINFORCE (losses.py), the advantage centred by the batch mean over
                       all targets (a baseline: unbiased, if noisier than a per-target mean)
    classifier_guidance / dps: no training; `sample` runs the prior with a guided reverse mean (`guidance`).

Only log p_post carries a gradient, through all K steps or a random subset rescaled to stay unbiased
(`subset_gradient_sum`). Evaluation: on-policy samples per target, mean log r, the learned log Z(c) against the Monte
Carlo log Z(c) = log mean_m r(x_m, c)^beta over prior samples x_m ~ p (unbiased in Z), the importance-weighted
log Z and ELBO of the samples' trajectories, a diversity, and a sample grid per target.

A plain class (no Ray), with the surface of RTBLearner: `train(num_iters, replay)`, `evaluate()`, `state_dict()`
(prior included: resumes bit-identically), `prior_state_dict()`, `replay_seeds()`.
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from workloads.checkpoint import restore_training_state, training_state
from workloads.diffusion import classifier
from workloads.diffusion.ddpm import DDPM, Guidance, predict_eps
from workloads.diffusion.image_metrics import feature_diversity, frechet_distance, image_features
from workloads.diffusion.train import LossLog, prior_key, train_ddpm, training_images
from workloads.diffusion.unet import LORA_TARGETS, make_unet
from workloads.objectives import backtracking_pair_loss, clipped_relative_tb_loss, relative_tb_loss
from workloads.rtb.image_config import ImagePosteriorConfig
from workloads.rtb.losses import kl_regularized_advantage, reinforce_loss, reward_advantage
from workloads.rtb.trajectories import subset_gradient_sum
from workloads.samplers.learner import keep_freed_memory
from workloads.samplers.policy import LANGEVIN_GRAD_CLIP
from workloads.samplers.replay import TerminalBatch

PRIOR_SAMPLES_SEED_OFFSET = 7_000_001
"""The prior samples behind the Monte Carlo log Z use prior_seed + this: every trial sharing a prior shares them."""
EVAL_CHUNK = 128
"""Trajectories sampled at once in evaluation (re-scoring them is one model call over chunk * K rows)."""
GRID_SAMPLES = 32
"""Samples shown per target in the evaluation figures."""
PROGRESS_EVERY = 200
"""Prior training steps between two progress calls of `trained_prior_state`."""


class ImageReward(Protocol):
    """A constraint on images: log r(x, c) for images x [B, C, H, W] in [-1, 1] and classes c [B] (int64) -> [B],
    differentiable in x (classifier guidance and DPS take its gradient)."""

    def log_r(self, x: Tensor, targets: Tensor) -> Tensor: ...


class MeanIntensityReward:
    """An analytic reward, a check without a classifier: class c asks for the mean pixel m(x) = -1 + 0.2 c,

    log r(x, c) = -(m(x) - (-1 + 0.2 c))^2 / (2 s^2)."""

    def __init__(self, scale: float = 0.1):
        self.scale = scale

    def log_r(self, x: Tensor, targets: Tensor) -> Tensor:
        level = -1.0 + 0.2 * targets.to(x.dtype)  # [B]
        return -((x.flatten(1).mean(1) - level) ** 2) / (2 * self.scale**2)


def make_reward(config: ImagePosteriorConfig, device: torch.device) -> ImageReward:
    """The config's reward: the analytic one, or a classifier of the prior's training images (default
    ClassifierConfig, trained with prior_seed: deterministic on the CPU) whose targets index `class_sets` (0 .. 9
    the digits, 10 even, 11 odd)."""
    if config.reward == "mean_intensity":
        return MeanIntensityReward()
    images, labels = classifier.labelled_training_images(config.prior)
    # trained on the CPU wherever it is used: the same classifier on a GPU learner and on CPU reward actors
    model, _ = classifier.train_classifier(classifier.ClassifierConfig(), images, labels, config.prior_seed, "cpu")
    return classifier.ClassifierReward(model, int(labels.max()) + 1).to(device)


@dataclass
class ImageEvaluation:
    metrics: dict[str, float]
    """eval/...: mean_log_r, prior_mean_log_r, exact_mean_log_r (E_post[log r] by reweighting prior samples),
    log_z_mc, log_z_iw, elbo, log_ratio, pixel_diversity (mean pairwise L2), and with a classifier reward fd (the
    Fréchet distance to the class's training images on the classifier's features), diversity (mean pairwise cosine
    distance of those features), data_diversity (that of the class's images) and diversity_ratio; averages over
    the targets (mean_log_r_c<c> per target when conditional); for rtb log_z and log_z_error."""
    samples: np.ndarray
    """[N, C * H * W] in [-1, 1]: eval_samples on-policy samples per target, target by target (`sample_targets`),
    flattened (samples.npz in `files` holds them as images)."""
    sample_targets: np.ndarray
    """[N] the class each sample was drawn for."""
    figures: dict[str, Figure]
    """'samples_c<c>': a grid of the first samples of each target c."""
    files: dict[str, bytes] = field(default_factory=dict)
    """'per_target.json': log Z (learned, Monte Carlo, importance-weighted), mean log r, FD and diversities of each
    target; 'samples.npz': images [N, C, H, W] and targets [N]."""


class ClassInputConv(nn.Module):
    """conv_in of a conditional posterior: the prior's conv on the image channels plus a conv on the E one-hot class
    channels that starts at 0, so the output is the prior's whatever the class; the class conv is a module of its own,
    so that a LoRA posterior trains it without touching the image path."""

    def __init__(self, image_conv: nn.Conv2d, extra_in_channels: int):
        super().__init__()
        self.image, self.image_channels = image_conv, image_conv.in_channels
        c = image_conv
        self.classes = nn.Conv2d(extra_in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, bias=False)
        nn.init.zeros_(self.classes.weight)
        self.classes.to(c.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C + E, H, W] -> [B, F, H, W]."""
        return self.image(x[:, : self.image_channels]) + self.classes(x[:, self.image_channels :])


def build_posterior(prior: nn.Module, config: ImagePosteriorConfig, seed: int) -> nn.Module:
    """eps_phi: a copy of the prior (copy: every weight trains) or the frozen prior with LoRA adapters on
    LORA_TARGETS (lora: only the adapters train, B = 0 so the output is the prior's); with several targets, one-hot
    input channels through a zero-initialized conv that trains too (ClassInputConv); with `learned_variance`, a
    parameter `log_variance_scale` [K + 1] of zeros that DDPM.reverse_mean_var reads; with `reward_guidance`, a
    parameter `guidance_scale` [K + 1] of zeros (ImageRTBLearner.posterior_guidance). Equal to the prior at the
    start, for every input."""
    posterior = copy.deepcopy(prior).eval()
    if config.conditional:
        posterior.conv_in = ClassInputConv(posterior.conv_in, len(config.targets))
    levels, device = config.prior.sampling_steps + 1, next(prior.parameters()).device
    if config.learned_variance:
        posterior.log_variance_scale = nn.Parameter(torch.zeros(levels, device=device))
    if config.reward_guidance:
        posterior.guidance_scale = nn.Parameter(torch.zeros(levels, device=device))
    if config.parameterization == "copy":
        return posterior.requires_grad_(True)
    from peft import LoraConfig, inject_adapter_in_model  # imported here: only LoRA posteriors need it

    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=list(LORA_TARGETS))
    with torch.random.fork_rng(devices=[]):  # the adapters' A is drawn from the global RNG
        torch.manual_seed(seed)
        posterior = inject_adapter_in_model(lora, posterior)
    posterior.requires_grad_(False)
    for name, parameter in posterior.named_parameters():
        parameter.requires_grad_(
            "lora_" in name or name.startswith("conv_in.classes.") or name in ("log_variance_scale", "guidance_scale")
        )
    return posterior


def sample_grid(images: np.ndarray, title: str, columns: int = 8) -> Figure:
    """The images [n, C, H, W] in [-1, 1] tiled in rows of `columns`, one pixel apart."""
    n, C, H, W = images.shape
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (H + 1) - 1, columns * (W + 1) - 1, C))
    for i, image in enumerate((images.clip(-1, 1) + 1) / 2):
        r, c = divmod(i, columns)
        canvas[r * (H + 1) : r * (H + 1) + H, c * (W + 1) : c * (W + 1) + W] = image.transpose(1, 2, 0)
    fig = Figure(figsize=(columns * 0.5 + 0.5, rows * 0.5 + 0.7))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(canvas[..., 0] if C == 1 else canvas, cmap="gray" if C == 1 else None, vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize="small")
    return fig


def trained_prior_state(
    config: ImagePosteriorConfig,
    device: torch.device | str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """{'key': prior_key, 'unet': the trained prior's state dict, 'fit': {fit_s, final_loss}}: what a learner
    takes as `prior_state`. progress(step, loss) is called every PROGRESS_EVERY steps."""
    p, losses, start = config.prior, LossLog(progress, PROGRESS_EVERY), time.time()
    unet = train_ddpm(p, training_images(p), config.prior_seed, losses, device=device)
    fit = {"fit_s": time.time() - start, "final_loss": losses.final_loss()}
    return {"key": prior_key(p, config.prior_seed), "unet": unet.state_dict(), "fit": fit}


class ImageRTBLearner:
    def __init__(
        self,
        config: ImagePosteriorConfig,
        seed: int,
        device: str = "cpu",
        prior_state: dict | None = None,
        reward_pool: ImageReward | None = None,
    ):
        """`reward_pool`: where the values of log r are computed (e.g. actors.reward.PooledReward); None: on this
        learner. grad log r (guidance) and the classifier's features (FD, diversity) use the learner's own reward."""
        self.config, self.seed, self.device = config, seed, torch.device(device)
        self.reward_pool = reward_pool
        if self.device.type == "cpu":
            keep_freed_memory()
        self.ddpm = DDPM(config.prior)
        self._reward: ImageReward | None = None
        self.target_classes = torch.tensor(config.targets, device=self.device)  # [n_c]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.prior_seed)
            self.prior = make_unet(config.prior).to(self.device).eval().requires_grad_(False)
        self.log_z = nn.Embedding(len(config.targets), 1).to(self.device)  # log Z(c), one scalar per target
        nn.init.zeros_(self.log_z.weight)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.step = 0
        self.posterior: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.prior_fit: dict[str, float] | None = None
        """Statistics of the prior's training; None until it is trained (on first use) or loaded."""
        self._prior_reference: tuple[Tensor, Tensor, Tensor] | None = None
        """`prior_reference()`, computed on the first evaluation."""
        self._exact_images: Tensor | None = None
        """[n_c, eval_samples, C, H, W]: the M prior samples resampled by r^beta per target (exact posterior samples of
        the prior in use), drawn with `prior_reference()`."""
        self._exact_metrics: dict[str, float] | None = None
        """FD and diversity of `_exact_images`, computed on the first evaluation."""
        self._data_features: list[Tensor] | None = None
        """`data_features()`, computed on the first evaluation."""
        if prior_state is not None:
            self._set_prior(prior_state)

    # ---------------------------------------------------------------- the prior
    def _prior_key(self) -> str:
        return prior_key(self.config.prior, self.config.prior_seed)

    def _set_prior(self, prior_state: dict) -> None:
        """Loads the prior and builds the posterior from it, with a fresh optimizer."""
        if prior_state["key"] != self._prior_key():
            raise ValueError(f"prior trained under key {prior_state['key']}, but this config needs {self._prior_key()}")
        self.prior.load_state_dict(prior_state["unet"])
        self.prior_fit = dict(prior_state["fit"])
        self.posterior = build_posterior(self.prior, self.config, self.config.prior_seed)
        trainable = [p for p in self.posterior.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            [{"params": trainable, "lr": self.config.lr}, {"params": [self.log_z.weight], "lr": self.config.lr_log_z}]
        )
        self._prior_reference, self._exact_images, self._exact_metrics = None, None, None

    def _ensure_prior(self) -> None:
        """Trains the prior on first use: a learner is cheap to build (and to restore, its checkpoint holds the
        prior)."""
        if self.prior_fit is None:
            self._set_prior(trained_prior_state(self.config, self.device))

    def prior_state_dict(self) -> dict[str, Any]:
        """{'key': prior_key, 'unet': the prior's state dict, 'fit': its training statistics}, to pass as
        `prior_state` to another learner whose config has the same prior and prior_seed."""
        self._ensure_prior()
        return copy.deepcopy({"key": self._prior_key(), "unet": self.prior.state_dict(), "fit": self.prior_fit})

    # ---------------------------------------------------------------- conditioning and reward
    def class_index(self, n: int) -> Tensor:
        """[n] indices into `targets` of n rows: b mod len(targets)."""
        return torch.arange(n, device=self.device) % len(self.config.targets)

    def condition(self, class_index: Tensor) -> Tensor | None:
        """The posterior's extra input channels [B, n_c, H, W]: the one-hot code of the target (None: one target)."""
        if not self.config.conditional:
            return None
        side = self.config.prior.image_size
        one_hot = F.one_hot(class_index, len(self.config.targets)).float()  # [B, n_c]
        return one_hot[:, :, None, None].expand(-1, -1, side, side)

    @property
    def reward(self) -> ImageReward:
        """The config's reward (`make_reward`: a classifier is trained on first use), unless one was set:
        `learner.reward = ClassifierReward(...)` shares a trained classifier, or gives a test an analytic one."""
        if self._reward is None:
            self._reward = make_reward(self.config, self.device)
        return self._reward

    @reward.setter
    def reward(self, reward: ImageReward) -> None:
        self._reward = reward

    def log_r(self, x: Tensor, class_index: Tensor) -> Tensor:
        """log r(x, c) [B] for images x [B, C, H, W] and target indices [B] (values: through the pool if any)."""
        return (self.reward_pool or self.reward).log_r(x, self.target_classes[class_index])

    # ---------------------------------------------------------------- training
    def _log_p_post(
        self, states: Tensor, class_index: Tensor, start_index: int, values: Tensor | None = None
    ) -> Tensor:
        """sum_j log p_post(tau) [B] of trajectories for targets class_index [B], with the gradient through all
        steps or a random subset; `values` [B, L]: the per-step values without gradient, when the sampler already
        has them."""
        ddpm, fraction = self.ddpm, self.config.grad_steps_fraction
        kwargs = {"start_index": start_index, "guidance": self.posterior_guidance(class_index)}
        extra = self.condition(class_index)
        if fraction >= 1.0:
            return ddpm.log_prob_steps(self.posterior, states, extra, **kwargs).sum(-1)
        if values is None:
            with torch.no_grad():
                values = ddpm.log_prob_steps(self.posterior, states, extra, **kwargs)
        return subset_gradient_sum(
            values,
            lambda steps: ddpm.log_prob_steps(self.posterior, states, extra, steps=steps, **kwargs),
            fraction,
            self.generator,
        )

    def _rtb_objective(self, log_p_post: Tensor, log_p_prior: Tensor, log_r: Tensor, log_z: Tensor) -> Tensor:
        c = self.config
        if c.loss_clip == 0:
            return relative_tb_loss(log_p_post, log_p_prior, log_r, log_z, c.beta)
        return clipped_relative_tb_loss(log_p_post, log_p_prior, log_r, log_z, c.beta, c.loss_clip)

    def _forward_loss(self, exploration_std: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(loss, x_0 [B, C, H, W], log r [B], log p_post - log p [B]) of one batch of forward trajectories."""
        c = self.config
        idx = self.class_index(c.batch_size)
        extra = self.condition(idx)
        traj = self.ddpm.sample(
            self.posterior,
            c.batch_size,
            self.generator,
            extra=extra,
            guidance=self.posterior_guidance(idx),
            exploration_std=exploration_std,
        )
        log_p_post = self._log_p_post(traj.states, idx, 0, traj.log_prob_steps)  # [B]
        with torch.no_grad():
            log_p_prior = self.ddpm.log_prob_steps(self.prior, traj.states).sum(-1)  # [B]
            log_r = self.log_r(traj.x0, idx)  # [B]
        if c.method == "rl":
            loss = reinforce_loss(log_p_post, reward_advantage(log_r, c.rl_advantage))
        elif c.method == "rl_kl":
            alpha = c.kl_weight if c.kl_weight is not None else 1.0 / c.beta
            loss = reinforce_loss(log_p_post, kl_regularized_advantage(log_r, log_p_post, log_p_prior, alpha))
        else:
            loss = self._rtb_objective(log_p_post, log_p_prior, log_r, self.log_z(idx).squeeze(-1))
        return loss, traj.x0, log_r, (log_p_post - log_p_prior).detach()

    def _backtracking_loss(self, x0: Tensor, exploration_std: float) -> Tensor:
        """The pair residual of the module docstring on replay samples x0 [B, C, H, W], target b mod n_c (RTB holds
        for any trajectory of p_post(. | c), so any assignment of targets to replayed samples is valid)."""
        B, K = len(x0), self.ddpm.num_steps
        idx = self.class_index(B)
        noised, redenoised = self.ddpm.backtrack(
            self.posterior,
            x0,
            self.config.backtrack_steps,
            self.generator,
            extra=self.condition(idx),
            exploration_std=exploration_std,
            guidance=self.posterior_guidance(idx),
        )
        states = torch.cat([noised, redenoised.states])  # [2B, k + 1, C, H, W]: back, then forward
        start = K - self.config.backtrack_steps
        log_p_post = self._log_p_post(states, torch.cat([idx, idx]), start)  # [2B]
        with torch.no_grad():
            log_p_prior = self.ddpm.log_prob_steps(self.prior, states, start_index=start).sum(-1)  # [2B]
            log_r = self.log_r(states[:, -1], torch.cat([idx, idx]))  # [2B]
        return backtracking_pair_loss(log_p_post, log_p_prior, log_r, self.config.beta, self.config.loss_clip)

    def _replay_images(self, replay: Any) -> Tensor | None:
        """Replay samples [N, C, H, W] (a tensor, an array, or a batch with `.x`); None when none or not rtb."""
        if replay is None or self.config.method != "rtb":
            return None
        x = getattr(replay, "x", replay)
        x = torch.as_tensor(x if isinstance(x, Tensor) else np.array(x), dtype=torch.float32, device=self.device)
        return x.reshape(-1, *self.ddpm.shape) if x.numel() else None

    def train(self, num_iters: int, replay: Any = None) -> tuple[dict[str, float], TerminalBatch]:
        """`num_iters` iterations; (chunk-mean metrics 'train/...', the forward terminal states flattened to
        [n, C * H * W] with their log r, for a replay buffer).

        `replay`: samples for rtb to backtrack from every replay_every-th iteration; ignored by the other methods.
        classifier_guidance and dps only advance the step."""
        self._ensure_prior()
        c = self.config
        if not c.trains:
            self.step += num_iters
            return {}, self._terminal_batch([], [])
        replay_x = self._replay_images(replay)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        logs, forward_logs, terminals, terminal_log_r, cursor, replay_iters = [], [], [], [], 0, 0
        for _ in range(num_iters):
            expl = c.exploration(self.step)
            if replay_x is not None and self.step % c.replay_every == c.replay_every - 1:
                idx = (cursor + torch.arange(c.batch_size, device=self.device)) % len(replay_x)  # [B]
                loss = self._backtracking_loss(replay_x[idx], expl)
                cursor, replay_iters = cursor + c.batch_size, replay_iters + 1
            else:
                loss, x0, log_r, log_ratio = self._forward_loss(expl)
                terminals.append(x0.detach())
                terminal_log_r.append(log_r)
                forward_logs.append(torch.stack([log_r.mean(), log_ratio.mean(), log_r.new_tensor(expl)]))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(params, c.grad_clip or math.inf)
            if torch.isfinite(grad_norm):
                self.optimizer.step()
            logs.append(torch.stack([loss, grad_norm, self.log_z.weight.mean()]).detach())
            self.step += 1
        every_iteration = torch.stack(logs).mean(0).tolist() if logs else [math.nan] * 3
        forward = torch.stack(forward_logs).mean(0).tolist() if forward_logs else [math.nan] * 3
        names = ("loss", "grad_norm", "log_z", "mean_log_r", "log_ratio", "exploration_std")
        metrics = {f"train/{name}": value for name, value in zip(names, every_iteration + forward)}
        if c.method == "rtb":
            metrics["train/replay_fraction"] = replay_iters / max(num_iters, 1)
        else:  # no log Z, no exploration
            del metrics["train/log_z"], metrics["train/exploration_std"]
        return metrics, self._terminal_batch(terminals, terminal_log_r)

    def _terminal_batch(self, x0: list[Tensor], log_r: list[Tensor]) -> TerminalBatch:
        """Forward samples [n, C, H, W] and their log r [n], chunk by chunk, as one batch of flat states."""
        if not x0:
            return TerminalBatch(np.zeros((0, math.prod(self.ddpm.shape)), np.float32), np.zeros(0, np.float32))
        return TerminalBatch(torch.cat(x0).flatten(1).cpu().numpy(), torch.cat(log_r).cpu().numpy())

    # ---------------------------------------------------------------- sampling and evaluation
    def _guidance_step(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(levels j [N], (1 - a_j) / sqrt(a_j) [N, 1, 1, 1]) of timesteps t [N]: the reverse mean's shift per unit of
        a guidance gradient (the eps form of `guidance`), shared by the baselines' and the posterior's guidance."""
        s = self.ddpm.schedule
        levels = torch.searchsorted(s.timesteps[1:].to(t.device), t) + 1  # kept timesteps ascending: level j
        a = s.at(s.step_alpha, levels, like)
        return levels, (1 - a) / a.sqrt()

    def guidance(self, class_index: Tensor) -> Guidance:
        """The guided reverse mean of classifier_guidance / dps for rows of targets `class_index` [N]:

            mean_j + s (1 - a_j) / sqrt(a_j) g,   g = grad_{x_j} log r(x_j, c)            (classifier guidance)
                                                  g = grad_{x_j} log r(x0_hat(x_j), c)    (DPS, through the UNet)

        s (1 - a_j) / sqrt(a_j) g is the shift of the mean that eps -> eps - sqrt(1 - abar_j) s g makes (Dhariwal &
        Nichol 2021's eps form; about s var_j g). CG evaluates the clean-image reward at the noisy state; DPS (Chung
        et al. 2023) at the sampler's x0_hat (clamped to [-1, 1] with clip_x0_hat: no gradient through saturated
        pixels, which bounds the 1 / sqrt(abar_j) of d x0_hat / d x_j at high noise), with the step scaled like CG's
        rather than DPS's s / |y - A(x0_hat)|."""
        s, prior, targets = self.ddpm.schedule, self.prior, self.target_classes[class_index]
        scale, dps, clip = self.config.guidance_scale, self.config.method == "dps", self.config.prior.clip_x0_hat

        def shift(x_t: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
            levels, per_unit_gradient = self._guidance_step(t, x_t)
            with torch.enable_grad():
                x = x_t.detach().requires_grad_(True)
                point = x
                if dps:  # x0_hat(x_j) with its gradient through the UNet
                    abar = s.at(s.abar, levels, x)
                    point = (x - (1 - abar).sqrt() * predict_eps(prior, x, t)) / abar.sqrt()
                    point = point.clamp(-1, 1) if clip else point  # the x0_hat of the sampler's mean
                (g,) = torch.autograd.grad(self.reward.log_r(point, targets).sum(), x)  # [N, C, H, W]
            return scale * per_unit_gradient * g

        return shift

    def posterior_guidance(self, class_index: Tensor) -> Guidance | None:
        """With `reward_guidance`, the posterior's own shift of its reverse mean for trajectories of targets
        class_index [B] (None without):

            lambda_j (1 - a_j) / sqrt(a_j) clip(g),   g = grad_{x0_hat} log r(x0_hat, c), x0_hat detached

        with lambda = posterior.guidance_scale [K + 1], trained by RTB. Rows may be the B * S flattened steps of
        DDPM.log_prob_steps (trajectory-major), whose targets are class_index repeated S times each."""
        if not self.config.reward_guidance:
            return None
        scales, targets = self.posterior.guidance_scale, self.target_classes[class_index]

        def shift(x_t: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
            levels, per_unit_gradient = self._guidance_step(t, x_t)
            with torch.enable_grad():
                point = x0_hat.detach().requires_grad_(True)
                row_targets = targets.repeat_interleave(len(x_t) // len(targets))
                (g,) = torch.autograd.grad(self.reward.log_r(point, row_targets).sum(), point)
            g = g.clamp(-LANGEVIN_GRAD_CLIP, LANGEVIN_GRAD_CLIP)
            return scales[levels].view(-1, 1, 1, 1).to(x_t.dtype) * per_unit_gradient * g

        return shift

    @torch.no_grad()
    def sample(self, class_index: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Posterior samples for targets class_index [N]: (x_0 [N, C, H, W], log q(tau) [N] of the sampler,
        log p(tau) [N] of the prior), in chunks of EVAL_CHUNK."""
        xs, log_qs, log_ps = [], [], []
        for idx in class_index.split(EVAL_CHUNK):
            if self.config.trains:
                extra, guidance = self.condition(idx), self.posterior_guidance(idx)
                traj = self.ddpm.sample(self.posterior, len(idx), generator, extra=extra, guidance=guidance)
            else:
                traj = self.ddpm.sample(self.prior, len(idx), generator, guidance=self.guidance(idx))
            xs.append(traj.x0)
            log_qs.append(traj.log_prob_steps.sum(-1))
            log_ps.append(self.ddpm.log_prob_steps(self.prior, traj.states).sum(-1))
        return torch.cat(xs), torch.cat(log_qs), torch.cat(log_ps)

    @torch.no_grad()
    def prior_reference(self) -> tuple[Tensor, Tensor, Tensor]:
        """Over M = prior_eval_samples prior samples x_m ~ p, per target [n_c] each (cached: the prior is fixed):

        log Z_mc(c)      = log mean_m r(x_m, c)^beta        (unbiased in Z, so biased low in log Z by Jensen)
        prior mean log r = mean_m log r(x_m, c)
        exact mean log r = sum_m w_m log r(x_m, c),  w = softmax_m(beta log r(x_m, c))   (E_post[log r], self-
                                                                                           normalized IS)
        and, per target, eval_samples of the x_m resampled by w: exact posterior samples of the prior in use."""
        self._ensure_prior()
        if self._prior_reference is None:
            c, n_c = self.config, len(self.config.targets)
            g = torch.Generator(device=self.device).manual_seed(c.prior_seed + PRIOR_SAMPLES_SEED_OFFSET)
            sizes = [min(EVAL_CHUNK, c.prior_eval_samples - i) for i in range(0, c.prior_eval_samples, EVAL_CHUNK)]
            x = torch.cat([self.ddpm.sample(self.prior, n, g).x0 for n in sizes])  # [M, C, H, W]
            log_r = torch.stack([self.log_r(x, torch.full((len(x),), i, device=self.device)) for i in range(n_c)])
            log_r = log_r.double()  # [n_c, M]
            log_z = torch.logsumexp(c.beta * log_r, 1) - math.log(len(x))  # [n_c]
            w = torch.softmax(c.beta * log_r, 1)  # [n_c, M]
            exact = (w * log_r).sum(1)  # [n_c]
            g_cpu = torch.Generator().manual_seed(c.prior_seed + PRIOR_SAMPLES_SEED_OFFSET)
            resampled = torch.multinomial(w.float().cpu(), c.eval_samples, True, generator=g_cpu)  # [n_c, n]
            self._exact_images = x[resampled.to(self.device)]  # [n_c, n, C, H, W]
            self._prior_reference = (log_z, log_r.mean(1), exact)
        return self._prior_reference

    @torch.no_grad()
    def data_features(self) -> list[Tensor] | None:
        """Per target, the classifier's features [N_c, F] of the prior's training images of that class (or class
        set): the true class-conditional data that FD and the diversity ratio compare with (computed once). None
        when the reward is not a classifier (no features)."""
        if not isinstance(self.reward, classifier.ClassifierReward):
            return None
        if self._data_features is None:
            images, labels = classifier.labelled_training_images(self.config.prior)
            members = classifier.class_sets(self.reward.num_classes)[self.target_classes.cpu()][:, labels]  # [n_c, N]
            features = image_features(self.reward.classifier, images.to(self.device))  # [N, F]
            self._data_features = [features[m.to(self.device)] for m in members]
        return self._data_features

    @torch.no_grad()
    def exact_metrics(self, data_features: list[Tensor]) -> dict[str, float]:
        """FD and diversity of the prior's exact posterior samples (`prior_reference`), as the sampler's are taken:
        what an exact sampler of this prior scores on eval_samples images, the reference for `eval/fd`."""
        if self._exact_metrics is None:
            self.prior_reference()
            n_c, n = self._exact_images.shape[:2]
            features = image_features(self.reward.classifier, self._exact_images.flatten(0, 1)).view(n_c, n, -1)
            fd = [frechet_distance(d, f) for d, f in zip(data_features, features)]
            self._exact_metrics = {
                "eval/exact_fd": float(np.mean(fd)),
                "eval/exact_diversity": float(np.mean([feature_diversity(f) for f in features])),
            }
        return self._exact_metrics

    @torch.no_grad()
    def evaluate(self, num_samples: int | None = None) -> ImageEvaluation:
        """Metrics of num_samples (default eval_samples) on-policy samples per target; deterministic in (seed, step)."""
        c, n_c = self.config, len(self.config.targets)
        log_z_mc, prior_mean_log_r, exact_mean_log_r = self.prior_reference()
        n = num_samples or c.eval_samples
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_033 + self.step)
        idx = torch.arange(n_c, device=self.device).repeat_interleave(n)  # [N], target by target
        x, log_q, log_p = self.sample(idx, g)
        log_r = self.log_r(x, idx).double().view(n_c, n)
        log_w = log_p.double().view(n_c, n) + c.beta * log_r - log_q.double().view(n_c, n)  # [n_c, n]
        log_z_iw = torch.logsumexp(log_w, 1) - math.log(n)  # [n_c]
        flat = x.flatten(1).double().view(n_c, n, -1)
        pixel_diversity = torch.cdist(flat, flat).sum((1, 2)) / (n * (n - 1))  # [n_c] mean pairwise L2 distance
        metrics = {
            "eval/mean_log_r": log_r.mean().item(),
            "eval/prior_mean_log_r": prior_mean_log_r.mean().item(),
            "eval/exact_mean_log_r": exact_mean_log_r.mean().item(),
            "eval/log_z_mc": log_z_mc.mean().item(),
            "eval/log_z_iw": log_z_iw.mean().item(),
            "eval/elbo": log_w.mean().item(),
            "eval/log_ratio": (log_q - log_p).double().mean().item(),
            "eval/pixel_diversity": pixel_diversity.mean().item(),
        }
        per_target = {"targets": list(c.targets), "log_z_mc": log_z_mc.tolist(), "log_z_iw": log_z_iw.tolist()}
        per_target["mean_log_r"] = log_r.mean(1).tolist()
        data_features = self.data_features()
        if data_features is not None:  # FD and diversity on the classifier's features, against the class's data
            features = image_features(self.reward.classifier, x).view(n_c, n, -1)  # [n_c, n, F]
            per_target["fd"] = [frechet_distance(d, f) for d, f in zip(data_features, features)]
            per_target["diversity"] = [feature_diversity(f) for f in features]
            per_target["data_diversity"] = [feature_diversity(d) for d in data_features]
            for name in ("fd", "diversity", "data_diversity"):
                metrics[f"eval/{name}"] = float(np.mean(per_target[name]))
            metrics["eval/diversity_ratio"] = metrics["eval/diversity"] / metrics["eval/data_diversity"]
            metrics |= self.exact_metrics(data_features)
        if c.conditional:
            metrics |= {f"eval/mean_log_r_c{t}": m for t, m in zip(c.targets, per_target["mean_log_r"])}
        if c.method == "rtb":
            log_z = self.log_z.weight.squeeze(-1).double()  # [n_c]
            metrics |= {"eval/log_z": log_z.mean().item(), "eval/log_z_error": (log_z - log_z_mc).abs().mean().item()}
            per_target["log_z"] = log_z.tolist()
        samples = x.cpu().numpy()
        figures = {
            f"samples_c{t}": sample_grid(
                samples[i * n : i * n + min(n, GRID_SAMPLES)],
                f"{c.method} step {self.step}, c = {t}: mean log r {per_target['mean_log_r'][i]:.3f}",
            )
            for i, t in enumerate(c.targets)
        }
        targets = np.repeat(np.asarray(c.targets), n)
        npz = io.BytesIO()
        np.savez_compressed(npz, images=samples, targets=targets)
        files = {"per_target.json": json.dumps(per_target).encode(), "samples.npz": npz.getvalue()}
        return ImageEvaluation(metrics, samples.reshape(len(samples), -1), targets, figures, files)

    # ---------------------------------------------------------------- checkpointing
    def _checkpointed(self) -> dict[str, nn.Module]:
        return {"posterior": self.posterior, "log_z": self.log_z}

    def replay_seeds(self) -> None:
        """None: a replay buffer fills from training."""

    def state_dict(self) -> dict:
        """A snapshot (deep copy) with the prior and its training statistics: restoring needs no retraining."""
        self._ensure_prior()
        state = training_state(self._checkpointed(), self.optimizer, self.step, self.seed, self.generator, self.config)
        return state | {"prior": copy.deepcopy(self.prior.state_dict()), "prior_fit": dict(self.prior_fit)}

    def load_state_dict(self, state: dict) -> None:
        self._set_prior({"key": self._prior_key(), "unet": state["prior"], "fit": state["prior_fit"]})
        self.step, self.seed = restore_training_state(
            state, self._checkpointed(), self.optimizer, (self.config.lr, self.config.lr_log_z), self.generator
        )

    @classmethod
    def from_state_dict(cls, state: dict, device: str = "cpu", reward: ImageReward | None = None) -> ImageRTBLearner:
        """A learner restored from `state`, with `reward` (None: the config's)."""
        learner = cls(ImagePosteriorConfig(**state["config"]), seed=state["seed"], device=device)
        learner._reward = reward
        learner.load_state_dict(state)
        return learner
