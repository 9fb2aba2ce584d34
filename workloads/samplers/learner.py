"""SamplerLearner: trains a forward-SDE diffusion sampler (arXiv:2402.05098) with TB, VarGrad, SubTB,
FL-SubTB or PIS, optionally with the Langevin-parameterized drift.

One training iteration s (global step):
    expl_s = exploration * max(0, 1 - s / (exploration_decay * total_iters))     (config: per-target defaults)
    if replay is given, replay.enabled and (s is odd | u_s < replay.share):   (backward / "local search" iteration)
        tau <- Brownian bridge backward from buffer states x (no exploration)
    elif u'_s < reference_share:                            (reference iteration)
        tau <- Brownian bridge backward from x ~ N(0, sigma^2 I): the reference process's own trajectories
    else:                                                    (forward iteration)
        tau <- forward SDE from x_0 = 0 with sampling std sqrt(sigma^2 dt + expl_s^2)
               (PIS: on-policy and reparameterized, the gradient kept through the states)
    loss = TB(log PF(tau), log PB(tau), log R(x), log Z) | VarGrad(log PF, log PB, log R)
         | SubTB(log PF_i, log PB_i, log F(x_i)) | PIS(log PF, log PB, log R)
    Adam step on (theta, flow, log Z) with global-norm gradient clipping.

Flows of (FL-)SubTB, i = 0..T: log F(x_0) = log Z, log F(x_T) = log R(x_T), and in between
log F_phi(x_i, t_i) (subtb) or (1 - t_i) log p_ref(x_i, t_i) + t_i log R(x_i) + log F~_phi(x_i, t_i)
(fl_subtb). The flow network trains at the policy's learning rate.

Replay states found by local search carry the learner step at the start of their round;
train/replay_staleness_iters is the mean over backward iterations s of s - search_step(x).

Evaluation (N = eval_samples; metrics.py has the estimators):
    forward tau ~ PF (no exploration)        -> ELBO, log Z_RW, Delta log Z, Delta log Z_RW, W2, W1, figures
    N exact x ~ p, K backward tau ~ PB(. | x) -> EUBO, exact_log_likelihood = mean_x log p_theta(x)

A plain class (no Ray): `train(num_iters, replay)` returns chunk metrics and the forward terminal
states; `evaluate()` the metrics above and figures; `state_dict()` resumes bit-identically.
The learner owns its own torch.Generator, so evaluation never perturbs training randomness.
"""

from __future__ import annotations

import ctypes
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from workloads.checkpoint import restore_training_state, training_state
from workloads.objectives import boundary_log_flows, fl_subtb_loss, pis_loss, subtb_loss, tb_loss, vargrad_loss
from workloads.samplers.config import SamplerConfig
from workloads.samplers.losses import intermediate_log_reward
from workloads.samplers.metrics import eubo, log_importance_weights, log_likelihood, log_z_metrics, w1, w2
from workloads.samplers.plots import evaluation_figures
from workloads.samplers.policy import DriftPolicy, FlowNetwork
from workloads.samplers.replay import TerminalBatch
from workloads.samplers.sde import (
    Trajectory,
    reference_log_marginal,
    sample_backward,
    sample_forward,
    sample_forward_reparameterized,
    time_grid,
)
from workloads.samplers.targets import Target, make_target

EXACT_SAMPLES_SEED_OFFSET = 1_000_003
"""Exact target samples for evaluation use seed + this offset (fixed per learner seed)."""
EVAL_CHUNK_TRAJECTORIES = 4096
"""Backward trajectories rolled out at once in evaluation: bounds the [chunk, T+1, D] states and the
drift network's activations (Manywell, T = 100: ~50 MB of states)."""
FLOW_LOSSES = ("subtb", "fl_subtb")
"""Losses with a learned flow network."""
BATCH_LOG_Z_LOSSES = ("vargrad", "pis")
"""Losses that learn no log Z: `log_z` holds the last forward batch's estimate mean(log R + log PB - log PF)."""
SCHEDULE_STREAM = 0x5C4ED
"""Third word of the (seed, step, .) seed of the uniforms u_s, u'_s that pick an iteration's kind."""
MALLOC_MMAP_THRESHOLD_BYTES = 32 << 20
"""Largest block glibc serves from the heap once `keep_freed_memory` ran (a training iteration's largest
tensors, the noise and states [T, B, D], are 3.8 MB at batch 300, T = 100, D = 32)."""


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse the memory of one training iteration's tensors in the next (process-wide).

    PyTorch takes CPU tensors from malloc. glibc serves a block above its mmap threshold (128 kB, raised
    dynamically to the largest block freed so far) by a fresh mmap and unmaps it on free, so an iteration's
    large tensors (noise, states, the activations and gradients of the log PF pass) are page-faulted in anew
    on every iteration: 2,000-5,000 minor faults per iteration at batch 300, T = 100, and ~20 % of its time
    on 2 cores. Raising the mmap threshold to MALLOC_MMAP_THRESHOLD_BYTES and the trim threshold above any
    iteration's peak keeps those blocks in the heap for the next iteration. What is computed does not
    change. Returns whether glibc took the settings (False elsewhere).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, 32 * MALLOC_MMAP_THRESHOLD_BYTES)
    )


@dataclass
class SamplerEvaluation:
    metrics: dict[str, float]
    """eval/delta_log_z, eval/delta_log_z_rw, eval/log_z_learned, eval/elbo, eval/log_z_rw, eval/eubo,
    eval/w2 (the figure of the paper's Table 1 column 'W2^2': see orchestrator/families/samplers/report.py), eval/w1,
    eval/exact_log_likelihood, and the target's mode statistics (`Target.mode_metrics`: Manywell's
    eval/minor_mode_fraction beside eval/exact_minor_mode_fraction)."""
    samples: np.ndarray
    """[N, D] terminal states of on-policy forward trajectories."""
    figures: dict[str, Figure]
    """'samples' (2-d targets: samples over contours of log R) or 'marginals' (sampler vs exact histograms)."""
    files: dict[str, bytes] = field(default_factory=dict)
    """No other artifacts."""


class SamplerLearner:
    def __init__(self, config: SamplerConfig, seed: int, device: str = "cpu", target: Target | None = None):
        """`target`: a Target built elsewhere (the outsourced family's noise-space posterior), in place of
        `config.target`'s; `config.target` then only names it in figures."""
        self.config, self.seed, self.device = config, seed, torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.target = (target if target is not None else make_target(config.target)).to(self.device)
        net_dims = (config.hidden_dim, config.time_embedding_dim, config.num_layers)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(seed)
            grad_log_reward = self.target.grad_log_reward if config.langevin else None
            self.policy = DriftPolicy(
                self.target.dim,
                *net_dims,
                grad_log_reward=grad_log_reward,
                log_variance_range=config.log_variance_range,
            ).to(self.device)
            self.flow = FlowNetwork(self.target.dim, *net_dims).to(self.device) if config.loss in FLOW_LOSSES else None
        self.log_z = nn.Parameter(torch.zeros((), device=self.device))
        networks = [self.policy] + ([self.flow] if self.flow is not None else [])
        self.optimizer = torch.optim.Adam(
            [
                {"params": [p for net in networks for p in net.parameters()], "lr": config.lr_policy},
                {"params": [self.log_z], "lr": config.lr_log_z},
            ],
            foreach=True,  # one kernel per op over all parameters (the same arithmetic as the per-tensor loop)
        )
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.step = 0
        self.last_kinds: list[str] = []
        """The kind of each iteration of the last `train` call ('forward', 'replay', 'reference')."""

    # ---------------------------------------------------------------- training
    def exploration_std(self, step: int) -> float:
        c = self.config
        return c.exploration * max(0.0, 1.0 - step / (c.exploration_decay * c.total_iters))

    def iteration_kind(self, step: int, replay_available: bool) -> str:
        """'replay', 'reference' or 'forward': what iteration `step` trains on (module docstring). Random shares
        draw from (seed, step) alone, so the schedule is the same however training is chunked or resumed."""
        c = self.config
        u_replay, u_reference = np.random.default_rng((self.seed, step, SCHEDULE_STREAM)).random(2)
        if replay_available and (step % 2 == 1 if c.replay.share is None else u_replay < c.replay.share):
            return "replay"
        return "reference" if u_reference < c.reference_share else "forward"

    def _flow_loss(self, traj: Trajectory, log_r: Tensor) -> Tensor:
        """(FL-)SubTB over the flows log F(x_i, t_i), i = 0..T: log Z, the learned flow (subtb) or the learned
        correction of the forward-looking flow (fl_subtb) at the interior states, log R(x_T)."""
        c = self.config
        t = time_grid(c.num_steps, self.device)[1:-1]  # [T-1], interior times
        x = traj.states[:, 1:-1]  # [B, T-1, D]
        log_f = self.flow(x, t)  # [B, T-1]
        if c.loss == "subtb":
            log_flows = boundary_log_flows(log_f, self.log_z, log_r)  # [B, T+1]
            return subtb_loss(traj.log_pf_steps, traj.log_pb_steps, log_flows, c.subtb_lambda)
        with torch.no_grad():  # log R is a fixed function of the (detached) states
            log_r_states = self.target.log_reward(x.reshape(-1, x.shape[-1])).view(x.shape[:2])  # [B, T-1]
        log_r_tilde = intermediate_log_reward(reference_log_marginal(x, t, c.diffusion_sigma2), log_r_states, t)
        return fl_subtb_loss(
            traj.log_pf_steps, traj.log_pb_steps, log_f, log_r_tilde, self.log_z, log_r, c.subtb_lambda
        )

    def _loss(self, traj: Trajectory, log_r: Tensor) -> tuple[Tensor, Tensor]:
        """(loss, log Z used by it)."""
        c = self.config
        if c.loss == "tb":
            return tb_loss(traj.log_pf, traj.log_pb, log_r, self.log_z), self.log_z.detach()
        if c.loss in FLOW_LOSSES:
            return self._flow_loss(traj, log_r), self.log_z.detach()
        log_z_hat = (log_r + traj.log_pb - traj.log_pf).mean().detach()  # batch estimate
        if c.loss == "pis":
            return pis_loss(traj.log_pf, traj.log_pb, log_r), log_z_hat
        return vargrad_loss(traj.log_pf, traj.log_pb, log_r), log_z_hat

    @torch.no_grad()
    def _log_reward(self, x: Tensor) -> Tensor:
        return self.target.log_reward(x)

    def _sample_forward(self, exploration_std: float) -> tuple[Trajectory, Tensor]:
        """Forward trajectories for training and their log R; PIS keeps the gradient through the states
        (and so through log R), the off-policy losses sample without it."""
        c = self.config
        if c.loss == "pis":
            traj = sample_forward_reparameterized(
                self.policy, c.batch_size, c.num_steps, c.diffusion_sigma2, self.target.dim, self.generator
            )
            return traj, self.target.log_reward(traj.terminal)
        traj = sample_forward(
            self.policy, c.batch_size, c.num_steps, c.diffusion_sigma2, exploration_std, self.target.dim, self.generator
        )
        with torch.no_grad():
            return traj, self.target.log_reward(traj.terminal)

    def train(self, num_iters: int, replay: TerminalBatch | None = None) -> tuple[dict[str, float], TerminalBatch]:
        c = self.config
        use_replay = replay is not None and len(replay) > 0 and c.replay.enabled
        if use_replay:
            replay_x = torch.tensor(replay.x, device=self.device)  # [N, D]
            replay_log_r = torch.tensor(replay.log_reward, device=self.device)  # [N]
            replay_search_step = (  # [N]; None: states of unknown search round
                None if replay.search_step is None else torch.tensor(replay.search_step, device=self.device)
            )
            cursor = 0
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        logs: list[Tensor] = []
        staleness: list[Tensor] = []
        expls: list[float] = []
        terminal_x: list[Tensor] = []
        terminal_log_r: list[Tensor] = []
        kinds: list[str] = []
        for _ in range(num_iters):
            expl = self.exploration_std(self.step)
            kind = self.iteration_kind(self.step, use_replay)
            self.target.at_step(self.step)
            if kind == "replay":
                idx = (cursor + torch.arange(c.batch_size, device=self.device)) % replay_x.shape[0]  # [B]
                cursor += c.batch_size
                if replay_search_step is not None:
                    staleness.append((self.step - replay_search_step[idx]).double().mean())
                traj = sample_backward(self.policy, replay_x[idx], c.num_steps, c.diffusion_sigma2, self.generator)
                log_r = self._log_reward(replay_x[idx]) if self.target.anneals else replay_log_r[idx]  # [B]
            elif kind == "reference":
                x_ref = math.sqrt(c.diffusion_sigma2) * torch.randn(
                    c.batch_size, self.target.dim, device=self.device, generator=self.generator
                )  # [B, D]: the reference process at t = 1
                traj = sample_backward(self.policy, x_ref, c.num_steps, c.diffusion_sigma2, self.generator)
                log_r = self._log_reward(x_ref)  # [B]
            else:
                traj, log_r = self._sample_forward(expl)  # [B]
                terminal_x.append(traj.terminal.detach())
                terminal_log_r.append(log_r.detach())
            kinds.append(kind)
            loss, log_z = self._loss(traj, log_r)
            if c.loss in BATCH_LOG_Z_LOSSES and kind == "forward":
                self.log_z.data.copy_(log_z)  # log Z holds the last forward-batch estimate
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(params, math.inf if c.grad_clip is None else c.grad_clip)
            if torch.isfinite(grad_norm):
                for group, lr in zip(self.optimizer.param_groups, (c.lr_policy, c.lr_log_z)):
                    group["lr"] = lr * c.lr_factor(self.step)
                self.optimizer.step()
            self.step += 1
            logs.append(torch.stack([loss.detach(), log_z, grad_norm, log_r.detach().mean()]))
            expls.append(expl)
        self.target.at_step(None)
        self.last_kinds = kinds
        mean = torch.stack(logs).mean(0).tolist() if logs else [float("nan")] * 4
        metrics = {
            "train/loss": mean[0],
            "train/log_z": mean[1],
            "train/grad_norm": mean[2],
            "train/mean_log_reward": mean[3],
            "train/exploration_std": float(np.mean(expls)) if expls else float("nan"),
        }
        if c.reference_share > 0:
            metrics["train/reference_fraction"] = kinds.count("reference") / max(1, len(kinds))
        if staleness:
            metrics["train/replay_staleness_iters"] = torch.stack(staleness).mean().item()
        if terminal_x:
            terminals = TerminalBatch(torch.cat(terminal_x).cpu().numpy(), torch.cat(terminal_log_r).cpu().numpy())
        else:
            terminals = TerminalBatch(np.zeros((0, self.target.dim)), np.zeros(0))
        return metrics, terminals

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator) -> tuple[Trajectory, Tensor]:
        """On-policy forward trajectories (no exploration) and their log R."""
        c = self.config
        traj = sample_forward(
            self.policy, num_samples, c.num_steps, c.diffusion_sigma2, 0.0, self.target.dim, generator
        )
        return traj, self.target.log_reward(traj.terminal)

    @torch.no_grad()
    def backward_log_probs(
        self,
        x: Tensor,
        num_trajectories: int,
        generator: torch.Generator,
        chunk_trajectories: int = EVAL_CHUNK_TRAJECTORIES,
    ) -> tuple[Tensor, Tensor]:
        """log PF(tau_k) and log PB(tau_k | x_n), each [N, K], of K backward trajectories tau_k ~ PB(. | x_n)
        from each state of x [N, D]; rolled out about `chunk_trajectories` at a time."""
        c, K = self.config, num_trajectories
        log_pf, log_pb = [], []
        for x_chunk in x.split(max(1, chunk_trajectories // K)):  # [n, D]
            x_repeated = x_chunk.repeat_interleave(K, dim=0)  # [n K, D], row n K + k is (x_n, tau_k)
            traj = sample_backward(self.policy, x_repeated, c.num_steps, c.diffusion_sigma2, generator)
            log_pf.append(traj.log_pf.view(-1, K))  # [n, K]
            log_pb.append(traj.log_pb.view(-1, K))  # [n, K]
        return torch.cat(log_pf), torch.cat(log_pb)

    @torch.no_grad()
    def evaluate(self, num_samples: int | None = None) -> SamplerEvaluation:
        """Metrics on N on-policy samples and N exact samples (N = num_samples, default eval_samples; log Z on
        log_z_eval_samples when more); deterministic in (seed, step)."""
        c = self.config
        n = num_samples or c.eval_samples
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_033 + self.step)
        traj, log_r = self.sample(max(n, c.log_z_eval_samples or n), g)
        log_w = log_importance_weights(log_r, traj.log_pf, traj.log_pb)  # [N_log_z]
        m = log_z_metrics(log_w, self.target.log_z)
        exact_x = self.target.sample(n, seed=self.seed + EXACT_SAMPLES_SEED_OFFSET)  # [N, D]
        log_pf_bwd, log_pb_bwd = self.backward_log_probs(exact_x, c.eval_backward_trajectories, g)  # [N, K]
        log_w_bwd = log_importance_weights(self.target.log_reward(exact_x)[:, None], log_pf_bwd, log_pb_bwd)  # [N, K]
        samples, exact = traj.terminal[:n].cpu().numpy(), exact_x.cpu().numpy()  # N each
        metrics = {
            "eval/delta_log_z": m["delta_log_z"],
            "eval/delta_log_z_rw": m["delta_log_z_rw"],
            "eval/log_z_learned": self.log_z.item(),
            "eval/elbo": m["elbo"],
            "eval/log_z_rw": m["log_z_rw"],
            "eval/eubo": eubo(log_w_bwd),
            "eval/w2": w2(samples, exact),
            "eval/w1": w1(samples, exact),
            "eval/exact_log_likelihood": log_likelihood(log_pf_bwd, log_pb_bwd).mean().item(),
            **{f"eval/{name}": v for name, v in self.target.mode_metrics(traj.terminal[:n]).items()},
            **{f"eval/exact_{name}": v for name, v in self.target.mode_metrics(exact_x).items()},
        }
        name = getattr(self.target, "name", c.target)  # a target given to the learner names itself
        title = f"{name} step {self.step}: dlogZ_RW {m['delta_log_z_rw']:.3f}"
        return SamplerEvaluation(metrics, samples, evaluation_figures(name, self.target, samples, exact, title))

    # ---------------------------------------------------------------- checkpointing
    def _checkpointed(self) -> dict[str, nn.Module | Tensor]:
        """The learned state by checkpoint key: policy, log Z, and the flow network of (FL-)SubTB."""
        return {"policy": self.policy, "log_z": self.log_z} | ({"flow": self.flow} if self.flow is not None else {})

    def replay_seeds(self) -> None:
        """None: the replay buffer fills from training."""

    def state_dict(self) -> dict:
        """A snapshot (deep copy): later training does not alter it."""
        return training_state(self._checkpointed(), self.optimizer, self.step, self.seed, self.generator, self.config)

    def load_state_dict(self, state: dict) -> None:
        self.step, self.seed = restore_training_state(
            state, self._checkpointed(), self.optimizer, (self.config.lr_policy, self.config.lr_log_z), self.generator
        )

    @classmethod
    def from_state_dict(cls, state: dict, device: str = "cpu", target: Target | None = None) -> SamplerLearner:
        learner = cls(SamplerConfig(**state["config"]), state["seed"], device, target)
        learner.load_state_dict(state)
        return learner
