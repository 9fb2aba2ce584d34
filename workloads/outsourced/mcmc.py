r"""MCMC in noise space, the outsourced sampler's baseline (arXiv:2502.06999): parallel MALA or HMC chains on

    log R(z) = log N(z; 0, I) + beta log r(f(z)),

costed in reward evaluations, so that they compare with a diffusion sampler at an equal number of them.

MALA (Roberts & Tweedie 1996; `workloads/samplers/local_search.mala`, reused as is), step size eta:
    z' = z + eta grad log R(z) + sqrt(2 eta) xi,       xi ~ N(0, I),
    accept with min(1, R(z') q(z | z') / (R(z) q(z' | z))),   q(y | z) = N(y; z + eta grad log R(z), 2 eta I).

HMC (Duane et al. 1987; Neal 2011), step size eps, L leapfrog steps, H(z, p) = -log R(z) + |p|^2 / 2:
    p ~ N(0, I);  p <- p + (eps / 2) grad log R(z);
    L times:  z <- z + eps p;  p <- p + eps grad log R(z)   (a half step eps / 2 instead on the last);
    accept (z', p') with min(1, exp(H(z, p) - H(z', p'))).
The gradient at the chain's state is carried from step to step, so a step costs L evaluations of log R and its
gradient (the last one also gives log R(z') for the acceptance test).

Both adapt log(step size) during burn-in by Robbins-Monro towards a target acceptance a* (0.574 for MALA, 0.65 for
HMC):  log eta <- log eta + (a_batch - a*), a_batch the fraction of chains that accepted; frozen afterwards.

Reward evaluations are counted per chain, as the code calls `target.log_reward` (each call on B rows is B
evaluations of log R and, by autograd, its gradient; divided by the number of chains):
    a call of `mala` for K steps:  1 + K     (its start state, then one proposal per step)
    a call of `hmc`  for K steps:  1 + L K   (its start state, then L leapfrog positions per step)
less the 1 when the call is given its start state's (log R, grad). `MCMCChains` advances in segments and carries
them from one segment to the next, so chains run for K steps in any segments cost 1 + K (MALA) or 1 + L K (HMC).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from workloads.samplers.local_search import MalaResult, log_r_and_grad, mala
from workloads.samplers.targets.base import Target
from workloads.typed_config import StrictConfig

TARGET_ACCEPTANCE = {"mala": 0.574, "hmc": 0.65}
"""a* by method when the config leaves it None: the optimal MALA rate (Roberts & Rosenthal 1998) and the usual HMC
one (Beskos et al. 2013 give 0.651)."""


class ChainsConfig(StrictConfig):
    """Parallel chains on a noise-space density (their run length is the caller's); deterministic in their seed."""

    method: Literal["mala", "hmc"] = "mala"
    num_chains: int = Field(300, gt=0)
    burn_in: int = Field(100, ge=0)
    """The first `burn_in` steps (overall, not per segment) adapt the step size; later ones keep it."""
    step_size: float = Field(0.05, gt=0)
    """Initial eta (MALA) or eps (HMC)."""
    leapfrog_steps: int = Field(5, gt=0)
    """L, HMC only."""
    target_acceptance: float | None = Field(None, gt=0, lt=1)
    """a*; None: TARGET_ACCEPTANCE[method]."""
    thin: int = Field(10, gt=0)
    """As a trial's learner (mcmc_learner.py): steps between the states kept as samples; an evaluation takes the
    last ones kept, up to eval_samples of them, so that a few hundred chains still give as many samples as the
    sampler's evaluation."""

    def acceptance(self) -> float:
        """The a* in use."""
        return TARGET_ACCEPTANCE[self.method] if self.target_acceptance is None else self.target_acceptance

    def evaluations_per_step(self) -> int:
        """Per-chain evaluations of log R and its gradient in one step: 1 (MALA) or L (HMC)."""
        return 1 if self.method == "mala" else self.leapfrog_steps


class MCMCConfig(ChainsConfig):
    """Chains run for `num_steps`, a snapshot every `record_every` (run_chains)."""

    num_steps: int = Field(1_000, gt=0)
    record_every: int = Field(50, gt=0)
    """Steps between snapshots (the last segment is shorter when it does not divide num_steps)."""


@dataclass
class Snapshot:
    step: int
    """Steps taken by every chain so far."""
    reward_evaluations: int
    """Per-chain evaluations of log R (each with its gradient) so far, the start states of every segment included."""
    z: Tensor
    """[num_chains, d] chain states (detached, CPU)."""
    log_reward: Tensor
    """[num_chains] log R(z) (CPU)."""
    acceptance_rate: float
    """Over the segment's steps after burn-in (its last step's if the whole segment is burn-in)."""
    step_size: float
    """At the end of the segment."""


def hmc(
    target: Target,
    z0: Tensor,
    num_steps: int,
    burn_in: int,
    step_size: float,
    leapfrog_steps: int,
    target_acceptance: float = 0.65,
    generator: torch.Generator | None = None,
    adaptation_rate: float = 1.0,
    start: tuple[Tensor, Tensor] | None = None,
) -> MalaResult:
    """num_steps of HMC with L = leapfrog_steps from z0 [B, d]; the step size adapts as `mala`'s during the first
    burn_in steps. Costs 1 + L num_steps evaluations of log R and its gradient per chain (L num_steps given
    `start`, the (log R, grad log R) of z0)."""
    z = z0.detach().clone()  # [B, d]
    B = z.shape[0]
    log_r, grad = log_r_and_grad(target, z) if start is None else start  # [B], [B, d]
    log_eps = math.log(step_size)
    accepted, counted = torch.zeros((), device=z.device), 0
    for s in range(num_steps):
        eps = math.exp(log_eps)
        p0 = torch.randn(z.shape, device=z.device, generator=generator)  # [B, d]
        z_new, p = z, p0 + 0.5 * eps * grad
        for leap in range(leapfrog_steps):
            z_new = z_new + eps * p
            log_r_new, grad_new = log_r_and_grad(target, z_new)
            p = p + (eps if leap < leapfrog_steps - 1 else 0.5 * eps) * grad_new
        log_alpha = (log_r_new - 0.5 * (p**2).sum(-1)) - (log_r - 0.5 * (p0**2).sum(-1))  # H - H', [B]
        u = torch.rand(B, device=z.device, generator=generator)
        accept = torch.log(u) < log_alpha  # [B]; NaN or diverged trajectories are rejected
        a = accept[:, None]
        z = torch.where(a, z_new, z)
        grad = torch.where(a, grad_new, grad)
        log_r = torch.where(accept, log_r_new, log_r)
        rate = accept.float().mean()
        if s < burn_in:
            log_eps += adaptation_rate * (rate.item() - target_acceptance)
        else:
            accepted += rate
            counted += 1
    if counted == 0:  # no post-burn-in steps: report the last step's rate, as `mala` does
        accepted, counted = rate, 1
    return MalaResult(z, log_r, (accepted / counted).item(), math.exp(log_eps), grad)


class MCMCChains:
    """config.num_chains chains on `target` from z ~ N(0, I) (drawn from `seed`), advanced in segments; the adapted
    step size, the step count and the per-chain reward evaluations carry over between segments. Chains sample the
    final target: an annealed beta is the sampler's schedule, not theirs."""

    def __init__(self, target: Target, config: ChainsConfig, seed: int):
        target.at_step(None)
        self.target, self.config = target, config
        self.generator = torch.Generator(device=target.device).manual_seed(seed)
        self.z = torch.randn(config.num_chains, target.dim, device=target.device, generator=self.generator)  # [C, d]
        self.start: tuple[Tensor, Tensor] | None = None
        """(log R(z) [C], grad log R(z) [C, d]) of the states now, once evaluated: the next segment starts there."""
        self.step_size, self.step, self.reward_evaluations = config.step_size, 0, 0

    def advance(self, steps: int) -> Snapshot:
        """`steps` more steps of every chain (the part of the overall burn-in that falls in them adapts); 0 steps:
        a snapshot of the states as they are (acceptance rate NaN)."""
        c = self.config
        if self.start is None:  # the initial states' log R and gradient, the chains' one evaluation beyond steps
            self.start = log_r_and_grad(self.target, self.z)
            self.reward_evaluations += 1
        burn_in = min(steps, max(0, c.burn_in - self.step))
        if steps == 0:
            result = MalaResult(self.z, self.start[0], math.nan, self.step_size, self.start[1])
        elif c.method == "mala":
            result = mala(
                self.target, self.z, steps, burn_in, self.step_size, c.acceptance(), self.generator, start=self.start
            )
        else:
            result = hmc(
                self.target,
                self.z,
                steps,
                burn_in,
                self.step_size,
                c.leapfrog_steps,
                c.acceptance(),
                self.generator,
                start=self.start,
            )
        self.z, self.start = result.x.detach(), (result.log_reward, result.grad_log_reward)
        self.step_size, self.step = result.step_size, self.step + steps
        self.reward_evaluations += steps * c.evaluations_per_step()
        return Snapshot(
            step=self.step,
            reward_evaluations=self.reward_evaluations,
            z=self.z.cpu(),
            log_reward=result.log_reward.detach().cpu(),
            acceptance_rate=result.acceptance_rate,
            step_size=self.step_size,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "z": self.z.cpu(),
            "start": None if self.start is None else tuple(t.cpu() for t in self.start),
            "step_size": self.step_size,
            "step": self.step,
            "reward_evaluations": self.reward_evaluations,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.target.device
        self.z = state["z"].to(device)
        self.start = None if state["start"] is None else tuple(t.to(device) for t in state["start"])
        self.step_size, self.step = state["step_size"], state["step"]
        self.reward_evaluations = state["reward_evaluations"]
        self.generator.set_state(state["generator"])


def run_chains(
    target: Target,
    config: MCMCConfig,
    seed: int,
    on_snapshot: Callable[[Snapshot], None] | None = None,
) -> list[Snapshot]:
    """config.num_chains chains from z ~ N(0, I), run in segments of record_every steps; a Snapshot after each
    (also passed to `on_snapshot`)."""
    chains = MCMCChains(target, config, seed)
    snapshots: list[Snapshot] = []
    while chains.step < config.num_steps:
        snapshot = chains.advance(min(config.record_every, config.num_steps - chains.step))
        snapshots.append(snapshot)
        if on_snapshot is not None:
            on_snapshot(snapshot)
    return snapshots
