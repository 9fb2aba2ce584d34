"""SamplerLearner: trains a forward-SDE diffusion sampler with TB or VarGrad (arXiv:2402.05098).

One training iteration s (global step):
    expl_s = exploration_factor * max(0, 1 - s / (exploration_decay_fraction * total_iters))
    if replay is given, replay.enabled and s is odd:        (backward / "local search" iteration)
        tau <- Brownian bridge backward from buffer states x (no exploration)
    else:                                                    (forward iteration)
        tau <- forward SDE from x_0 = 0 with sampling std sqrt(sigma^2 dt + expl_s^2)
    loss = TB(log PF(tau), log PB(tau), log R(x), log Z)  or  VarGrad(log PF, log PB, log R)
    Adam step on (theta, log Z) with global-norm gradient clipping.

A plain class (no Ray): `train(num_iters, replay)` returns chunk metrics and the forward terminal
states; `evaluate()` the log Z errors, W2 and a figure; `state_dict()` resumes bit-identically.
The learner owns its own torch.Generator, so evaluation never perturbs training randomness.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from workloads.checkpoint import restore_training_state, training_state
from workloads.samplers.config import SamplerConfig
from workloads.samplers.losses import tb_loss, vargrad_loss
from workloads.samplers.metrics import log_importance_weights, log_z_metrics, w2
from workloads.samplers.plots import samples_over_contours
from workloads.samplers.policy import DriftPolicy
from workloads.samplers.replay import TerminalBatch
from workloads.samplers.sde import Trajectory, sample_backward, sample_forward
from workloads.samplers.targets import make_target

EXACT_SAMPLES_SEED_OFFSET = 1_000_003
"""Exact target samples for W2 use seed + this offset (fixed per learner seed)."""


@dataclass
class SamplerEvaluation:
    metrics: dict[str, float]
    """eval/delta_log_z, eval/delta_log_z_rw, eval/log_z_learned, eval/elbo, eval/log_z_rw, eval/w2."""
    samples: np.ndarray
    """[N, D] terminal states of on-policy forward trajectories."""
    figure: Figure


class SamplerLearner:
    def __init__(self, config: SamplerConfig, seed: int, device: str = "cpu"):
        self.config, self.seed, self.device = config, seed, torch.device(device)
        self.target = make_target(config.target).to(self.device)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(seed)
            self.policy = DriftPolicy(
                self.target.dim, config.hidden_dim, config.time_embedding_dim, config.num_layers
            ).to(self.device)
        self.log_z = nn.Parameter(torch.zeros((), device=self.device))
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(self.policy.parameters()), "lr": config.lr_policy},
                {"params": [self.log_z], "lr": config.lr_log_z},
            ]
        )
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.step = 0

    # ---------------------------------------------------------------- training
    def exploration_std(self, step: int) -> float:
        c = self.config
        return c.exploration_factor * max(0.0, 1.0 - step / (c.exploration_decay_fraction * c.total_iters))

    def _loss(self, traj: Trajectory, log_r: Tensor) -> tuple[Tensor, Tensor]:
        """(loss, log Z used by it)."""
        if self.config.loss == "tb":
            return tb_loss(traj.log_pf, traj.log_pb, log_r, self.log_z), self.log_z.detach()
        log_z_hat = (log_r + traj.log_pb - traj.log_pf).mean().detach()  # batch estimate
        return vargrad_loss(traj.log_pf, traj.log_pb, log_r), log_z_hat

    def train(self, num_iters: int, replay: TerminalBatch | None = None) -> tuple[dict[str, float], TerminalBatch]:
        c = self.config
        use_replay = replay is not None and len(replay) > 0 and c.replay.enabled
        if use_replay:
            replay_x = torch.tensor(replay.x, device=self.device)  # [N, D]
            replay_log_r = torch.tensor(replay.log_reward, device=self.device)  # [N]
            cursor = 0
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        logs: list[Tensor] = []
        expls: list[float] = []
        terminal_x: list[Tensor] = []
        terminal_log_r: list[Tensor] = []
        for _ in range(num_iters):
            expl = self.exploration_std(self.step)
            backward_iter = use_replay and self.step % 2 == 1
            if backward_iter:
                idx = (cursor + torch.arange(c.batch_size, device=self.device)) % replay_x.shape[0]  # [B]
                cursor += c.batch_size
                log_r = replay_log_r[idx]  # [B]
                traj = sample_backward(self.policy, replay_x[idx], c.num_steps, c.sigma2, self.generator)
            else:
                traj = sample_forward(
                    self.policy, c.batch_size, c.num_steps, c.sigma2, expl, self.target.dim, self.generator
                )
                with torch.no_grad():
                    log_r = self.target.log_reward(traj.terminal)  # [B]
                terminal_x.append(traj.terminal)
                terminal_log_r.append(log_r)
            loss, log_z = self._loss(traj, log_r)
            if c.loss == "vargrad" and not backward_iter:
                self.log_z.data.copy_(log_z)  # VarGrad: log Z holds the last forward-batch estimate
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(params, c.grad_clip)
            if torch.isfinite(grad_norm):
                self.optimizer.step()
            self.step += 1
            logs.append(torch.stack([loss.detach(), log_z, grad_norm, log_r.mean()]))
            expls.append(expl)
        mean = torch.stack(logs).mean(0).tolist() if logs else [float("nan")] * 4
        metrics = {
            "train/loss": mean[0],
            "train/log_z": mean[1],
            "train/grad_norm": mean[2],
            "train/mean_log_reward": mean[3],
            "train/exploration_std": float(np.mean(expls)) if expls else float("nan"),
        }
        if terminal_x:
            terminals = TerminalBatch(
                torch.cat(terminal_x).cpu().numpy(), torch.cat(terminal_log_r).cpu().numpy()
            )
        else:
            terminals = TerminalBatch(np.zeros((0, self.target.dim)), np.zeros(0))
        return metrics, terminals

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def sample(self, num_samples: int, seed: int) -> tuple[Trajectory, Tensor]:
        """On-policy forward trajectories (no exploration) and their log R, deterministic in seed."""
        c = self.config
        g = torch.Generator(device=self.device).manual_seed(seed)
        traj = sample_forward(self.policy, num_samples, c.num_steps, c.sigma2, 0.0, self.target.dim, g)
        return traj, self.target.log_reward(traj.terminal)

    @torch.no_grad()
    def evaluate(self, num_samples: int | None = None) -> SamplerEvaluation:
        n = num_samples or self.config.eval_samples
        traj, log_r = self.sample(n, seed=self.seed * 1_000_033 + self.step)
        log_w = log_importance_weights(log_r, traj.log_pf, traj.log_pb)  # [N]
        m = log_z_metrics(log_w, self.target.log_z)
        samples = traj.terminal.cpu().numpy()
        exact = self.target.sample(n, seed=self.seed + EXACT_SAMPLES_SEED_OFFSET).cpu().numpy()
        metrics = {
            "eval/delta_log_z": m["delta_log_z"],
            "eval/delta_log_z_rw": m["delta_log_z_rw"],
            "eval/log_z_learned": self.log_z.item(),
            "eval/elbo": m["elbo"],
            "eval/log_z_rw": m["log_z_rw"],
            "eval/w2": w2(samples, exact),
        }
        title = f"{self.config.target} step {self.step}: dlogZ_RW {m['delta_log_z_rw']:.3f}"
        return SamplerEvaluation(metrics, samples, samples_over_contours(self.target, samples, title))

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        """A snapshot (deep copy): later training does not alter it."""
        return training_state({"policy": self.policy, "log_z": self.log_z}, self.optimizer, self.step,
                              self.seed, self.generator, self.config)

    def load_state_dict(self, state: dict) -> None:
        self.step, self.seed = restore_training_state(
            state, {"policy": self.policy, "log_z": self.log_z}, self.optimizer,
            (self.config.lr_policy, self.config.lr_log_z), self.generator)

    @classmethod
    def from_state_dict(cls, state: dict, device: str = "cpu") -> "SamplerLearner":
        learner = cls(SamplerConfig(**state["config"]), state["seed"], device)
        learner.load_state_dict(state)
        return learner
