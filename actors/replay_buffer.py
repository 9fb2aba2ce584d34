"""The replay-buffer role: owns the buffers of terminal states, serves prioritized batches and
runs local search (MALA on the target) on request, next to the data it needs.

As in the paper (arXiv:2402.05098, "+ LS"): forward samples enter `forward_buffer`; a local-search
round runs MALA from a prioritized batch of it and puts the results in `searched_buffer`;
replay batches (for backward trajectories) are served from `searched_buffer`.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from workloads.samplers.config import ReplayConfig
from workloads.samplers.local_search import mala
from workloads.samplers.replay import ReplayBuffer, TerminalBatch
from workloads.samplers.targets import make_target


class ReplayBufferRole:
    def __init__(self, config: ReplayConfig, target: str, seed: int, num_cpus: float = 1.0):
        torch.set_num_threads(max(1, math.floor(num_cpus)))
        self.config = config
        self.target = make_target(target)
        self.forward_buffer = ReplayBuffer(config.capacity, config.prioritization, config.rank_k, seed)
        self.searched_buffer = ReplayBuffer(config.capacity, config.prioritization, config.rank_k, seed + 1)
        self.step_size = config.mala_step_size
        self.generator = torch.Generator().manual_seed(seed + 2)

    def ping(self) -> int:
        return len(self.forward_buffer) + len(self.searched_buffer)

    def add(self, batch: TerminalBatch) -> int:
        self.forward_buffer.add(batch)
        return len(self.forward_buffer)

    def sample(self, n: int) -> TerminalBatch | None:
        """A replay batch from the local-search results; None before the first round."""
        return self.searched_buffer.sample(n) if len(self.searched_buffer) else None

    def local_search(self) -> dict[str, float]:
        """One round of parallel MALA from a prioritized batch of forward samples."""
        if not len(self.forward_buffer):
            return {}
        start = self.forward_buffer.sample(self.config.local_search_batch)
        result = mala(
            self.target, torch.as_tensor(start.x), num_steps=self.config.mala_steps,
            burn_in=self.config.mala_burn_in, step_size=self.step_size,
            target_acceptance=self.config.mala_target_acceptance, generator=self.generator,
        )
        self.step_size = float(result.step_size)
        self.searched_buffer.add(TerminalBatch(result.x.numpy(), result.log_reward.numpy()))
        return {"train/mala_acceptance": float(result.acceptance_rate), "train/mala_step_size": self.step_size}

    def get_state(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "forward_buffer": self.forward_buffer.state_dict(),
                "searched_buffer": self.searched_buffer.state_dict(), "generator": self.generator.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.step_size = state["step_size"]
        self.forward_buffer.load_state_dict(state["forward_buffer"])
        self.searched_buffer.load_state_dict(state["searched_buffer"])
        self.generator.set_state(state["generator"])
