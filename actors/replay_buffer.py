"""The replay-buffer role: owns the buffer of terminal states, serves prioritized batches and
runs local search (MALA on the target) on request, next to the data it needs.
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
        self.buffer = ReplayBuffer(config.capacity, config.prioritization, config.rank_k, seed)
        self.step_size = config.mala_step_size
        self.generator = torch.Generator().manual_seed(seed)

    def ping(self) -> int:
        return len(self.buffer)

    def add(self, batch: TerminalBatch) -> int:
        self.buffer.add(batch)
        return len(self.buffer)

    def sample(self, n: int) -> TerminalBatch | None:
        return self.buffer.sample(n) if len(self.buffer) else None

    def local_search(self) -> dict[str, float]:
        """One round: MALA from a prioritized batch; the final states re-enter the buffer."""
        if not len(self.buffer):
            return {}
        start = self.buffer.sample(self.config.local_search_batch)
        result = mala(
            self.target, torch.as_tensor(start.x), num_steps=self.config.mala_steps,
            burn_in=self.config.mala_burn_in, step_size=self.step_size,
            target_acceptance=self.config.mala_target_acceptance,
        )
        self.step_size = float(result.step_size)
        self.buffer.add(TerminalBatch(result.x.numpy(), result.log_reward.numpy()))
        return {"train/mala_acceptance": float(result.acceptance_rate), "train/mala_step_size": self.step_size}

    def get_state(self) -> dict[str, Any]:
        return {"step_size": self.step_size}

    def set_state(self, state: dict[str, Any]) -> None:
        self.step_size = state["step_size"]
