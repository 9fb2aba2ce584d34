"""RTBLearner: fine-tunes a diffusion prior p into a posterior p_post(x) ~ p(x) r(x)^beta on the 2-D toy with
relative trajectory balance (arXiv:2405.20971), or runs one of its baselines.

The prior p_theta (prior.py) is fitted on first use, or given as `prior_state` (a cached fit); the posterior starts
as a copy of it and is fully fine-tuned. One training iteration s:

    rtb, forward iteration:   tau ~ p_post with sampling std sqrt(sigma^2 dt + sigma_e(s)^2) (states without
                              gradient; log p_post(tau) re-evaluated with it)
    rtb, replay iteration:    (when `train` is given replay states and s is odd) tau ~ PB(. | x), the Brownian
                              bridge to a replay state x: RTB holds on any trajectory, so it trains off-policy too
        delta = log Z + log p_post(tau) - log p_theta(tau) - beta log r(x)        (x_0 = 0 and the backward process are
        loss  = mean delta^2 | mean relu(delta^2 - c)                               shared: only forward terms enter)
        log Z learned (loss tb) or the detached batch mean of log p_theta + beta log r - log p_post (vargrad)
    rl / rl_kl:               tau ~ p_post on-policy; REINFORCE (losses.py)
    classifier_guidance, dps: no training (guidance.py samples the prior with a guided drift)

Evaluation (metrics.py): N on-policy samples against the exact posterior of the fitted prior (M prior samples
weighted by r^beta, computed once per learner) and against N9, the exact posterior of the true prior. Every method is
measured against p_theta r^beta, the config's beta.

A plain class (no Ray): `train(num_iters, replay)` returns chunk metrics and the forward terminal states,
`evaluate()` metrics, samples and figures; `state_dict()` (prior included) resumes bit-identically. The learner owns
its torch.Generator, so evaluation never perturbs training randomness.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from workloads.checkpoint import restore_training_state, training_state
from workloads.objectives import clipped_relative_tb_loss, relative_tb_loss
from workloads.rtb.config import RTBConfig
from workloads.rtb.guidance import GuidedPolicy, classifier_guidance, dps_guidance
from workloads.rtb.losses import kl_regularized_advantage, reinforce_loss, reward_advantage
from workloads.rtb.metrics import ExactPosterior, exact_posterior, log_weights, mode_masses, total_variation
from workloads.rtb.plots import evaluation_figures
from workloads.rtb.prior import fitted_prior_state, new_drift_policy
from workloads.rtb.toy import Toy2D
from workloads.rtb.trajectories import subset_gradient_log_pf
from workloads.samplers.learner import keep_freed_memory
from workloads.samplers.metrics import log_z_reweighted, w2
from workloads.samplers.policy import DriftPolicy
from workloads.samplers.replay import TerminalBatch
from workloads.samplers.sde import forward_log_prob, sample_backward, sample_forward

EXACT_POSTERIOR_SEED_OFFSET = 7_000_001
"""The prior samples behind the exact posterior use prior_seed + this: every trial sharing a prior shares them."""
TARGET_SAMPLES_SEED_OFFSET = 1_000_003
"""Exact N9 samples for W2 use seed + this (fixed per learner seed)."""
EVAL_CHUNK_TRAJECTORIES = 10_000
"""Trajectories rolled out at once in evaluation (bounds the [chunk, T+1, 2] states and their log-probs)."""


@dataclass
class RTBEvaluation:
    metrics: dict[str, float]
    """eval/...: log Z (learned: eval/log_z, eval/log_z_error, rtb only; eval/log_z_mc, eval/log_z_iw,
    eval/log_z_iw_error, eval/elbo), mode masses (eval/tv_to_prior_posterior, eval/tv_to_target,
    eval/removed_mode_mass), eval/mean_log_r, eval/w2 (to N9), eval/w2_to_prior_posterior, eval/log_ratio, and the
    references of the fitted prior (eval/exact_*, eval/prior_tv_to_uniform, eval/prior_nll_bound)."""
    samples: np.ndarray
    """[N, 2] terminal states of on-policy posterior trajectories."""
    figures: dict[str, Figure]
    """'samples' (over N9's contours) and 'mode_masses' (bars)."""
    files: dict[str, bytes] = field(default_factory=dict)
    """'mode_masses.json': the 25 means and the mode masses of the samples, the exact posterior, N9 and the prior."""


class RTBLearner:
    def __init__(self, config: RTBConfig, seed: int, device: str = "cpu", prior_state: dict | None = None):
        self.config, self.seed, self.device = config, seed, torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.task = Toy2D().to(self.device)
        # Both start as the same untrained network; `_set_prior` loads the fitted prior into both.
        self.prior = new_drift_policy(config, config.prior_seed, self.device).requires_grad_(False)
        self.posterior = new_drift_policy(config, config.prior_seed, self.device, config.log_variance_range)
        self.log_z = nn.Parameter(torch.zeros((), device=self.device))
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(self.posterior.parameters()), "lr": config.lr},
                {"params": [self.log_z], "lr": config.lr_log_z},
            ],
            foreach=True,
        )
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.step = 0
        self.prior_fit: dict[str, float] | None = None
        """Statistics of the prior's fit; None until it is fitted (on first use) or loaded."""
        self._exact: ExactPosterior | None = None
        """The fitted prior's exact posterior, computed on the first evaluation."""
        if prior_state is not None:
            self._set_prior(prior_state)

    # ---------------------------------------------------------------- the prior
    def _set_prior(self, prior_state: dict) -> None:
        if prior_state["key"] != self.config.prior_key():
            raise ValueError(f"prior fitted for {prior_state['key']}, but this config needs {self.config.prior_key()}")
        self.prior.load_state_dict(prior_state["policy"])
        # A learned variance's head is the posterior's own: it keeps its initialization (the prior's variance).
        missing, unexpected = self.posterior.load_state_dict(prior_state["policy"], strict=False)
        if unexpected or any(not key.startswith("nn_var.") for key in missing):
            raise ValueError(f"the prior's state does not fit the posterior: missing {missing}, extra {unexpected}")
        self.prior_fit = dict(prior_state["fit"])
        self._exact = None

    def _ensure_prior(self) -> None:
        """Fits the prior on first use: a learner is cheap to build (and to restore from a checkpoint, which holds
        its prior), and an actor answers while the fit would run."""
        if self.prior_fit is None:
            self._set_prior(fitted_prior_state(self.config, self.device))

    def prior_state_dict(self) -> dict[str, Any]:
        """{'key': config.prior_key(), 'policy': the prior drift's state dict, 'fit': its fit statistics}, to pass
        as `prior_state` to another learner whose config has the same prior key."""
        self._ensure_prior()
        return copy.deepcopy({"key": self.config.prior_key(), "policy": self.prior.state_dict(), "fit": self.prior_fit})

    def sampler(self) -> DriftPolicy | GuidedPolicy:
        """The posterior sampler: the fine-tuned drift, or the prior with classifier guidance or DPS."""
        c = self.config
        if c.method == "classifier_guidance":
            guidance = classifier_guidance(self.task.grad_log_r)
        elif c.method == "dps":
            guidance = dps_guidance(self.prior, self.task.grad_log_r)
        else:
            return self.posterior
        return GuidedPolicy(self.prior, guidance, c.guidance_scale, c.sigma2, c.num_steps)

    # ---------------------------------------------------------------- training
    def _trajectories(self, replay_x: Tensor | None) -> tuple[Tensor, Tensor]:
        """(states [B, T+1, 2] without gradient, log p_post(tau) [B] with it): forward with exploration, or backward
        bridges to `replay_x`; the gradient through all steps or a random subset (trajectories.py)."""
        c = self.config
        all_steps = c.grad_steps_fraction >= 1.0
        with torch.set_grad_enabled(all_steps):
            if replay_x is None:
                expl = c.exploration(self.step)
                traj = sample_forward(self.posterior, c.batch_size, c.num_steps, c.sigma2, expl, 2, self.generator)
            else:
                traj = sample_backward(self.posterior, replay_x, c.num_steps, c.sigma2, self.generator)
        if all_steps:
            return traj.states, traj.log_pf
        log_p_post = subset_gradient_log_pf(
            self.posterior, traj.states, traj.log_pf_steps, c.sigma2, c.grad_steps_fraction, self.generator
        )
        return traj.states, log_p_post

    def _loss(self, log_p_post: Tensor, log_p_prior: Tensor, log_r: Tensor) -> Tensor:
        c = self.config
        if c.method == "rl":
            return reinforce_loss(log_p_post, reward_advantage(log_r, c.rl_advantage))
        if c.method == "rl_kl":
            return reinforce_loss(log_p_post, kl_regularized_advantage(log_r, log_p_post, log_p_prior, c.kl_alpha))
        log_z = self.log_z
        if c.loss == "vargrad":  # relative VarGrad: log Z_hat = mean_b (log p + beta log r - log p_post)
            log_z = (log_p_prior + c.beta * log_r - log_p_post).mean().detach()
            self.log_z.data.copy_(log_z)  # kept for logging and evaluation; it gets no gradient
        if c.loss_clip == 0:
            return relative_tb_loss(log_p_post, log_p_prior, log_r, log_z, c.beta)
        return clipped_relative_tb_loss(log_p_post, log_p_prior, log_r, log_z, c.beta, c.loss_clip)

    def _replay_states(self, replay: Any) -> Tensor | None:
        """Replay terminal states [N, 2] (a tensor, an array, or a batch with `.x`); None when none or not rtb."""
        if replay is None or self.config.method != "rtb":
            return None
        x = torch.as_tensor(np.asarray(getattr(replay, "x", replay), dtype=np.float32), device=self.device)
        return x.reshape(-1, self.task.dim) if x.numel() else None

    def train(self, num_iters: int, replay: Any = None) -> tuple[dict[str, float], TerminalBatch]:
        """`num_iters` iterations; (chunk-mean metrics 'train/...', the forward terminal states [n, 2] with their
        log r, for a replay buffer).

        `replay`: terminal states to train rtb on (backward bridges to them on odd steps); ignored by the on-policy
        methods. classifier_guidance and dps only advance the step."""
        self._ensure_prior()
        c = self.config
        if not c.trains:
            self.step += num_iters
            return {}, _terminal_batch([], [], self.task.dim)
        replay_x = self._replay_states(replay)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        logs, expls, terminals, terminal_log_r = [], [], [], []
        replay_iters, cursor = 0, 0
        for _ in range(num_iters):
            replay_batch = None
            if replay_x is not None and self.step % 2 == 1:
                idx = (cursor + torch.arange(c.batch_size, device=self.device)) % replay_x.shape[0]  # [B]
                replay_batch, cursor, replay_iters = replay_x[idx], cursor + c.batch_size, replay_iters + 1
            states, log_p_post = self._trajectories(replay_batch)
            with torch.no_grad():
                log_p_prior = forward_log_prob(self.prior, states, c.sigma2)  # [B]
                log_r = self.task.log_r(states[:, -1])  # [B]
            loss = self._loss(log_p_post, log_p_prior, log_r)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(params, c.grad_clip or math.inf)
            for group, lr in zip(self.optimizer.param_groups, (c.lr, c.lr_log_z)):
                group["lr"] = lr * c.lr_factor(self.step)
            if torch.isfinite(grad_norm):
                self.optimizer.step()
            if replay_batch is None:
                terminals.append(states[:, -1].cpu())
                terminal_log_r.append(log_r.cpu())
                expls.append(c.exploration(self.step))
            log_ratio = (log_p_post - log_p_prior).mean()
            logs.append(torch.stack([loss, self.log_z, grad_norm, log_r.mean(), log_ratio]).detach())
            self.step += 1
        mean = torch.stack(logs).mean(0).tolist() if logs else [math.nan] * 5
        metrics = {
            "train/loss": mean[0],
            "train/grad_norm": mean[2],
            "train/mean_log_r": mean[3],
            "train/log_ratio": mean[4],
            "train/exploration_std": float(np.mean(expls)) if expls else math.nan,
        }
        if c.method == "rtb":
            metrics |= {"train/log_z": mean[1], "train/replay_fraction": replay_iters / max(num_iters, 1)}
        return metrics, _terminal_batch(terminals, terminal_log_r, self.task.dim)

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def exact_posterior(self) -> ExactPosterior:
        """The fitted prior's exact posterior from `prior_eval_samples` of its samples (cached: the prior is fixed)."""
        self._ensure_prior()
        if self._exact is None:
            c = self.config
            g = torch.Generator(device=self.device).manual_seed(c.prior_seed + EXACT_POSTERIOR_SEED_OFFSET)
            chunks = [
                sample_forward(self.prior, n, c.num_steps, c.sigma2, 0.0, self.task.dim, g).terminal
                for n in _chunk_sizes(c.prior_eval_samples, EVAL_CHUNK_TRAJECTORIES)
            ]
            x = torch.cat(chunks)  # [M, 2]
            log_r = self.task.log_r(x)  # [M]
            modes = self.task.mode_of(x)  # [M]
            self._exact = exact_posterior(x, log_r, c.beta, modes, self.task.num_modes, c.w2_samples, g)
        return self._exact

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """On-policy posterior samples: (x [N, 2], log q(tau) [N], log p_theta(tau) [N]) of N trajectories."""
        c, sampler = self.config, self.sampler()
        xs, log_qs, log_ps = [], [], []
        for n in _chunk_sizes(num_samples, EVAL_CHUNK_TRAJECTORIES):
            traj = sample_forward(sampler, n, c.num_steps, c.sigma2, 0.0, self.task.dim, generator)
            xs.append(traj.terminal)
            log_qs.append(traj.log_pf)
            log_ps.append(forward_log_prob(self.prior, traj.states, c.sigma2))
        return torch.cat(xs), torch.cat(log_qs), torch.cat(log_ps)

    @torch.no_grad()
    def evaluate(self, num_samples: int | None = None) -> RTBEvaluation:
        """Metrics of N on-policy samples (N = num_samples, default eval_samples); deterministic in (seed, step)."""
        c, task = self.config, self.task
        exact = self.exact_posterior()
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_033 + self.step)
        x, log_q, log_p = self.sample(num_samples or c.eval_samples, g)
        log_r = task.log_r(x)  # [N]
        log_w = log_weights(log_p, log_q, log_r, c.beta)  # [N]
        masses = mode_masses(task.mode_of(x), task.num_modes)  # [K]
        target = task.target_mode_masses.double()  # [K]
        removed = ~task.kept_modes
        uniform = torch.full_like(target, 1.0 / task.num_modes)
        n_w2 = min(c.w2_samples, x.shape[0])
        target_x = task.sample_target(n_w2, seed=self.seed + TARGET_SAMPLES_SEED_OFFSET)  # [n, 2]
        log_z_iw = log_z_reweighted(log_w)
        metrics = {
            "eval/log_z_mc": exact.log_z,
            "eval/log_z_iw": log_z_iw,
            "eval/log_z_iw_error": abs(log_z_iw - exact.log_z),
            "eval/elbo": log_w.double().mean().item(),
            "eval/tv_to_prior_posterior": total_variation(masses, exact.mode_masses),
            "eval/tv_to_target": total_variation(masses, target),
            "eval/removed_mode_mass": masses[removed].sum().item(),
            "eval/mean_log_r": log_r.double().mean().item(),
            "eval/w2": w2(x[:n_w2], target_x),
            "eval/w2_to_prior_posterior": w2(x[:n_w2], exact.samples[:n_w2]),
            "eval/log_ratio": (log_q - log_p).double().mean().item(),
            "eval/exact_tv_to_target": total_variation(exact.mode_masses, target),
            "eval/exact_removed_mode_mass": exact.mode_masses[removed].sum().item(),
            "eval/exact_mean_log_r": exact.mean_log_r,
            "eval/prior_tv_to_uniform": total_variation(exact.prior_mode_masses, uniform),
            "eval/prior_nll_bound": self.prior_fit["nll_bound"],
        }
        if c.method == "rtb":
            metrics |= {"eval/log_z": self.log_z.item(), "eval/log_z_error": abs(self.log_z.item() - exact.log_z)}
        bars = {"samples": masses, "exact posterior (fitted prior)": exact.mode_masses, "N9": target}
        bars = {label: m.cpu().numpy() for label, m in bars.items()}
        title = f"{c.method} step {self.step}: TV {metrics['eval/tv_to_prior_posterior']:.3f}"
        samples = x.cpu().numpy()
        mode_file = {"means": task.means.tolist(), "prior": exact.prior_mode_masses.tolist()}
        mode_file |= {label: m.tolist() for label, m in bars.items()}
        return RTBEvaluation(
            metrics,
            samples,
            evaluation_figures(task, samples[:n_w2], bars, title),
            {"mode_masses.json": json.dumps(mode_file).encode()},
        )

    # ---------------------------------------------------------------- checkpointing
    def _checkpointed(self) -> dict[str, nn.Module | Tensor]:
        return {"posterior": self.posterior, "prior": self.prior, "log_z": self.log_z}

    def replay_seeds(self) -> None:
        """None: a replay buffer fills from training."""

    def state_dict(self) -> dict:
        """A snapshot (deep copy) with the prior and its fit statistics: restoring needs no refit."""
        self._ensure_prior()
        state = training_state(self._checkpointed(), self.optimizer, self.step, self.seed, self.generator, self.config)
        return state | {"prior_fit": dict(self.prior_fit)}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.seed = restore_training_state(
            state, self._checkpointed(), self.optimizer, (self.config.lr, self.config.lr_log_z), self.generator
        )
        self.prior_fit = dict(state["prior_fit"])
        self._exact = None

    @classmethod
    def from_state_dict(cls, state: dict, device: str = "cpu") -> RTBLearner:
        learner = cls(RTBConfig(**state["config"]), seed=state["seed"], device=device)
        learner.load_state_dict(state)
        return learner


def _terminal_batch(x: list[Tensor], log_r: list[Tensor], dim: int) -> TerminalBatch:
    """Terminal states [n, dim] and their log r [n] of the forward iterations, as one batch (n may be 0)."""
    if not x:
        return TerminalBatch(np.zeros((0, dim), np.float32), np.zeros(0, np.float32))
    return TerminalBatch(torch.cat(x).numpy(), torch.cat(log_r).numpy())


def _chunk_sizes(total: int, chunk: int) -> list[int]:
    """total split into chunks of at most `chunk`: [chunk, .., chunk, rest]."""
    return [min(chunk, total - start) for start in range(0, total, chunk)]
