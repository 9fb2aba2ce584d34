"""MCMCLearner: MCMC chains in the noise space of a generator as a trial's learner (method: mcmc), the outsourced
sampler's baseline at an equal number of reward evaluations (mcmc.py for MALA, HMC and their cost).

    train(n)     n more MALA / HMC steps of every chain on log R(z) = log N(z; 0, I) + beta log r(f(z)), keeping
                 the states every `mcmc.thin` steps
    evaluate()   the last states kept, the newest first, up to eval_samples of them (ceil(eval_samples / chains)
                 per chain, the usual thinned MCMC sample), evaluated in data space as the sampler's samples are
                 and against as many exact samples (learner.evaluate_noise)

The chains run in this process (`MCMCChains`) or, given `chains`, wherever that object runs them
(actors/mcmc_chains.py: PooledChains, on chain actors). A plain class (no Ray), the family layout's learner.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor

from workloads.outsourced.config import OutsourcedConfig
from workloads.outsourced.learner import OutsourcedEvaluation, evaluate_noise, noise_space_problem, reference_metrics
from workloads.outsourced.mcmc import MCMCChains, Snapshot


class Chains(Protocol):
    """What MCMCLearner runs: MCMCChains, or a pool of them on actors."""

    def advance(self, steps: int) -> Snapshot: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MCMCLearner:
    def __init__(
        self,
        config: OutsourcedConfig,
        seed: int,
        device: str = "cpu",
        generator_state: dict | None = None,
        chains: Chains | None = None,
    ):
        self.config, self.seed, self.device = config, seed, torch.device(device)
        self.problem, self.target = noise_space_problem(config, generator_state, self.device)
        self.chains = chains if chains is not None else MCMCChains(self.target, config.mcmc, seed)
        self.step = 0
        self.snapshot: Snapshot | None = None
        self.kept: list[Tensor] = []
        """The states every `thin` steps, [num_chains, d] each, the last ceil(eval_samples / num_chains) of them."""

    def train(self, num_iters: int, replay: Any = None) -> tuple[dict[str, float], None]:
        """num_iters steps of every chain; no terminal states for a buffer (None)."""
        keep = math.ceil(self.config.eval_samples / self.config.mcmc.num_chains)
        done = 0
        while done < num_iters:
            steps = min(num_iters - done, self.config.mcmc.thin - self.step % self.config.mcmc.thin)
            self.snapshot = self.chains.advance(steps)
            self.step, done = self.snapshot.step, done + steps
            if self.step % self.config.mcmc.thin == 0:
                self.kept = (self.kept + [self.snapshot.z])[-keep:]
        return self.snapshot_metrics("train"), None

    def snapshot_metrics(self, prefix: str) -> dict[str, float]:
        s = self.snapshot
        return {
            f"{prefix}/acceptance_rate": s.acceptance_rate,
            f"{prefix}/step_size": s.step_size,
            f"{prefix}/mean_log_reward": s.log_reward.mean().item(),
        }

    @torch.no_grad()
    def evaluate(self, num_samples: int | None = None) -> OutsourcedEvaluation:
        """The kept states (num_samples is the sampler's; eval_samples bounds these)."""
        if self.snapshot is None:  # before any step, or just restored: the states as they are
            self.snapshot = self.chains.advance(0)
        z = torch.cat((self.kept or [self.snapshot.z])[::-1])[: self.config.eval_samples]  # [N, d]
        metrics, figures, files = evaluate_noise(self.problem, self.target, z, self.seed, f"MCMC step {self.step}")
        metrics |= self.snapshot_metrics("eval") | reference_metrics(self.target)
        metrics["eval/reward_evaluations"] = float(self.snapshot.reward_evaluations * self.config.mcmc.num_chains)
        return OutsourcedEvaluation(metrics, z.numpy(), figures, files)

    def replay_seeds(self) -> None:
        """None: no replay buffer."""

    def state_dict(self) -> dict[str, Any]:
        return {"chains": self.chains.state_dict(), "step": self.step, "kept": list(self.kept)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chains.load_state_dict(state["chains"])
        self.step, self.snapshot, self.kept = state["step"], None, list(state["kept"])
