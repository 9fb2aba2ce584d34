"""The replay-buffer role of posterior fine-tuning (RTB): keeps the posterior's own samples with their log r and
serves prioritized batches of them as starts of off-policy (backward) trajectories. No local search: the samples
come from the learner only. The logic is `workloads.samplers.replay.ReplayBuffer`; this role adds the calls every
role answers (`ping`, `size`, `get_state`, `set_state`) and answers an empty buffer's `sample` with None.
"""

from __future__ import annotations

from typing import Any

from workloads.samplers.replay import ReplayBuffer, TerminalBatch


class SampleBufferRole:
    def __init__(self, capacity: int, prioritization: str, rank_k: float, seed: int):
        self.buffer = ReplayBuffer(capacity, prioritization, rank_k, seed)

    def ping(self) -> None:
        """Answers once the actor is alive."""

    def size(self) -> int:
        return len(self.buffer)

    def add(self, batch: TerminalBatch) -> None:
        self.buffer.add(batch)

    def sample(self, n: int) -> TerminalBatch | None:
        """n states drawn by the buffer's prioritization; None while it is empty (the learner then trains forward)."""
        return self.buffer.sample(n) if len(self.buffer) else None

    def get_state(self) -> dict[str, Any]:
        return self.buffer.state_dict()

    def set_state(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state)
