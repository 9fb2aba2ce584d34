"""Local search by parallel MALA on log R (arXiv:2402.05098, Sec. 3; Roberts & Tweedie 1996).

Each of B independent chains proposes, with step size eta,
    x' = x + eta grad log R(x) + sqrt(2 eta) xi,       xi ~ N(0, I)
and accepts with probability min(1, alpha),
    log alpha = log R(x') - log R(x) + log q(x | x') - log q(x' | x),
    log q(y | x) = -||y - x - eta grad log R(x)||^2 / (4 eta) + const.
During burn-in the shared step size is adapted by a Robbins-Monro step on log eta towards the target
acceptance rate a* (0.574, optimal for MALA):  log eta <- log eta + (a_batch - a*).
The step size is frozen after burn-in; the reported acceptance rate is over post-burn-in steps.
With `keep_accepted`, every proposal accepted after burn-in is kept as well: the reference's local search
returns all of them (B (K - burn-in) a* ~ 17,000 states for B = 300, K = 200), not only the B final states.

`LocalSearchReplay` holds the two buffers of "+ LS" and runs rounds of MALA between them; the
replay-buffer actor (`actors/replay_buffer.py`) and the in-process loop (`run_local.py`) share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from workloads.samplers.config import ReplayConfig
from workloads.samplers.replay import ReplayBuffer, TerminalBatch
from workloads.samplers.targets.base import Target


@dataclass
class MalaResult:
    x: Tensor
    """[B, D] final states of all chains."""
    log_reward: Tensor
    """[B] log R(x)."""
    acceptance_rate: float
    """Mean acceptance over the post-burn-in steps (over all steps if burn_in >= num_steps)."""
    step_size: float
    """Final (adapted) step size eta."""
    grad_log_reward: Tensor | None = None
    """[B, D] grad log R(x) at the final states (what a next call can start from, `start`)."""
    accepted_x: Tensor | None = None
    """[A, D] every proposal accepted after burn-in, in step order (with keep_accepted; else None)."""
    accepted_log_reward: Tensor | None = None
    """[A] their log R."""


def log_r_and_grad(target: Target, x: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        log_r = target.log_reward(x)  # [B]
        (grad,) = torch.autograd.grad(log_r.sum(), x)
    return log_r.detach(), grad


def mala(
    target: Target,
    x0: Tensor,
    num_steps: int,
    burn_in: int,
    step_size: float,
    target_acceptance: float = 0.574,
    generator: torch.Generator | None = None,
    adaptation_rate: float = 1.0,
    keep_accepted: bool = False,
    start: tuple[Tensor, Tensor] | None = None,
) -> MalaResult:
    x = x0.detach().clone()  # [B, D]
    B = x.shape[0]
    log_r, grad = log_r_and_grad(target, x) if start is None else start  # [B], [B, D]
    log_eta = math.log(step_size)
    accepted, counted = torch.zeros((), device=x.device), 0
    kept_x: list[Tensor] = []
    kept_log_r: list[Tensor] = []
    for s in range(num_steps):
        eta = math.exp(log_eta)
        xi = torch.randn(x.shape, device=x.device, generator=generator)  # [B, D]
        x_prop = x + eta * grad + math.sqrt(2 * eta) * xi  # [B, D]
        log_r_prop, grad_prop = log_r_and_grad(target, x_prop)
        log_q_fwd = -((x_prop - x - eta * grad) ** 2).sum(-1) / (4 * eta)  # log q(x' | x), [B]
        log_q_bwd = -((x - x_prop - eta * grad_prop) ** 2).sum(-1) / (4 * eta)  # log q(x | x'), [B]
        log_alpha = log_r_prop - log_r + log_q_bwd - log_q_fwd  # [B]
        u = torch.rand(B, device=x.device, generator=generator)
        accept = torch.log(u) < log_alpha  # [B]; NaN proposals are rejected
        a = accept[:, None]
        x = torch.where(a, x_prop, x)
        grad = torch.where(a, grad_prop, grad)
        log_r = torch.where(accept, log_r_prop, log_r)
        rate = accept.float().mean()
        if s < burn_in:
            log_eta += adaptation_rate * (rate.item() - target_acceptance)
        else:
            accepted += rate
            counted += 1
            if keep_accepted:
                kept_x.append(x_prop[accept])
                kept_log_r.append(log_r_prop[accept])
    if counted == 0:  # no post-burn-in steps: report the last step's rate
        accepted, counted = rate, 1
    result = MalaResult(x, log_r, (accepted / counted).item(), math.exp(log_eta), grad)
    if keep_accepted:
        result.accepted_x = torch.cat(kept_x) if kept_x else x[:0]
        result.accepted_log_reward = torch.cat(kept_log_r) if kept_log_r else log_r[:0]
    return result


class LocalSearchReplay:
    """The buffers of arXiv:2402.05098's "+ LS" and the local search between them.

    Forward samples enter `forward_buffer`; a round runs MALA from a prioritized batch of it and puts
    its results (`ReplayConfig.searched_states`: every accepted post-burn-in proposal, or the chains' final
    states) in `searched_buffer`, each tagged with `search_step`, the learner step at the start of its
    round; replay batches (states for backward trajectories) are drawn from `searched_buffer`.
    The adapted step size carries over from round to round.
    """

    def __init__(self, config: ReplayConfig, target: Target, seed: int):
        self.config = config
        self.target = target
        self.forward_buffer = ReplayBuffer(config.capacity, config.prioritization, config.rank_k, seed)
        self.searched_buffer = ReplayBuffer(config.capacity, config.prioritization, config.rank_k, seed + 1)
        self.step_size = config.mala_step_size
        self.generator = torch.Generator(device=target.device).manual_seed(seed + 2)
        self.reward_evaluations = 0
        """Evaluations of log R (with its gradient) by local search: 1 + mala_steps per chain and round."""

    def add(self, batch: TerminalBatch) -> int:
        """Forward samples into `forward_buffer`; returns its size."""
        self.forward_buffer.add(batch)
        return len(self.forward_buffer)

    def sample(self, n: int) -> TerminalBatch | None:
        """A replay batch of local-search results (with their `search_step`); None before the first round."""
        return self.searched_buffer.sample(n) if len(self.searched_buffer) else None

    def local_search(self, learner_step: int) -> dict[str, float]:
        """One round of parallel MALA from a prioritized batch of forward samples; `learner_step` is the
        learner's step as the round starts, kept with the results."""
        if not len(self.forward_buffer):
            return {}
        start = self.forward_buffer.sample(self.config.local_search_batch)
        keep_accepted = self.config.searched_states == "accepted"
        result = mala(
            self.target,
            torch.as_tensor(start.x, device=self.target.device),
            num_steps=self.config.mala_steps,
            burn_in=self.config.mala_burn_in,
            step_size=self.step_size,
            target_acceptance=self.config.mala_target_acceptance,
            generator=self.generator,
            keep_accepted=keep_accepted,
        )
        self.step_size = result.step_size
        self.reward_evaluations += len(start) * (1 + self.config.mala_steps)
        x, log_r = (result.accepted_x, result.accepted_log_reward) if keep_accepted else (result.x, result.log_reward)
        self.searched_buffer.add(TerminalBatch(x.cpu().numpy(), log_r.cpu().numpy(), learner_step))
        return {
            "train/mala_acceptance": result.acceptance_rate,
            "train/mala_step_size": self.step_size,
            "train/searched_states_added": float(len(x)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "step_size": self.step_size,
            "forward_buffer": self.forward_buffer.state_dict(),
            "searched_buffer": self.searched_buffer.state_dict(),
            "generator": self.generator.get_state(),
            "reward_evaluations": self.reward_evaluations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_size = state["step_size"]
        self.forward_buffer.load_state_dict(state["forward_buffer"])
        self.searched_buffer.load_state_dict(state["searched_buffer"])
        self.generator.set_state(state["generator"])
        self.reward_evaluations = state.get("reward_evaluations", 0)  # checkpoints before it was counted: 0
