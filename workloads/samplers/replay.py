"""Terminal-state batches and a prioritized replay buffer (arXiv:2402.05098, Sec. 3 "local search").

Rank prioritization (Tripp et al. 2020), rank 0 = highest log R, |D| = number of stored states:
    p(i) = w_i / sum_j w_j,    w_i = 1 / (k |D| + rank(i))
Reward prioritization:   p(i) ~ R(x_i) = exp(log R(x_i))    (computed as softmax of log R)
Uniform:                 p(i) = 1 / |D|

Insertion is O(batch) into a ring (the oldest entries are overwritten when full); ranks are computed
at sampling time (one argsort of the stored log rewards), never on insert.

States found by local search carry `search_step`, the learner step at the start of their round; the
buffer keeps it with them, so the learner can measure how stale a replay batch is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass
class TerminalBatch:
    x: np.ndarray
    """[N, D] float32 terminal states."""
    log_reward: np.ndarray
    """[N] float32 log R(x)."""
    search_step: np.ndarray | None = None
    """[N] int64 learner step at the start of the local-search round that produced each state; None for
    states that no local search produced (forward samples)."""

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=np.float32)
        self.log_reward = np.asarray(self.log_reward, dtype=np.float32)
        assert self.x.ndim == 2 and self.log_reward.shape == (self.x.shape[0],)
        if self.search_step is not None:
            self.search_step = np.broadcast_to(np.asarray(self.search_step, dtype=np.int64), self.log_reward.shape)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, idx: np.ndarray | slice) -> TerminalBatch:
        """The rows `idx`, every field kept aligned."""
        search_step = None if self.search_step is None else self.search_step[idx]
        return TerminalBatch(self.x[idx], self.log_reward[idx], search_step)

    @staticmethod
    def concat(batches: list[TerminalBatch]) -> TerminalBatch:
        search_steps = [b.search_step for b in batches]
        has_steps = [s is not None for s in search_steps]
        assert all(has_steps) or not any(has_steps), "concatenating searched and unsearched states"
        return TerminalBatch(
            np.concatenate([b.x for b in batches]),
            np.concatenate([b.log_reward for b in batches]),
            np.concatenate(search_steps) if all(has_steps) else None,
        )


class ReplayBuffer:
    def __init__(
        self,
        capacity: int,
        prioritization: Literal["rank", "reward", "uniform"] = "rank",
        rank_k: float = 0.01,
        seed: int = 0,
    ):
        assert prioritization in ("rank", "reward", "uniform"), prioritization
        self.capacity = capacity
        self.prioritization = prioritization
        self.rank_k = rank_k
        self.rng = np.random.default_rng(seed)
        self.x: np.ndarray | None = None  # [capacity, D], allocated on first add
        self.log_reward = np.empty(capacity, dtype=np.float32)  # [capacity]
        self.search_step: np.ndarray | None = None  # [capacity], allocated on the first add that has it
        self.size = 0
        self.head = 0  # next write position

    def __len__(self) -> int:
        return self.size

    def add(self, batch: TerminalBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        if self.x is None:
            self.x = np.empty((self.capacity, batch.x.shape[1]), dtype=np.float32)
            if batch.search_step is not None:
                self.search_step = np.empty(self.capacity, dtype=np.int64)
        # one buffer holds one kind of state, so that every sampled batch has search_step or none does
        assert (batch.search_step is None) == (self.search_step is None), "mixing searched and unsearched states"
        if n > self.capacity:  # only the newest `capacity` survive
            batch = batch[-self.capacity :]
            n = self.capacity
        idx = (self.head + np.arange(n)) % self.capacity  # [n]
        self.x[idx] = batch.x
        self.log_reward[idx] = batch.log_reward
        if self.search_step is not None:
            self.search_step[idx] = batch.search_step
        self.head = (self.head + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def probabilities(self) -> np.ndarray:
        """p(i) over the stored entries, [|D|] (slot order)."""
        N = self.size
        log_r = self.log_reward[:N].astype(np.float64)
        if self.prioritization == "uniform":
            return np.full(N, 1.0 / N)
        if self.prioritization == "reward":
            w = np.exp(log_r - log_r.max())
            return w / w.sum()
        rank = np.empty(N, dtype=np.float64)
        rank[np.argsort(-log_r, kind="stable")] = np.arange(N)  # rank 0 = highest log R
        w = 1.0 / (self.rank_k * N + rank)
        return w / w.sum()

    def sample(self, n: int) -> TerminalBatch:
        """n entries drawn i.i.d. (with replacement) from p."""
        assert self.size > 0, "sampling from an empty buffer"
        p = None if self.prioritization == "uniform" else self.probabilities()
        idx = self.rng.choice(self.size, size=n, replace=True, p=p)  # [n]
        return self._stored()[idx]

    def _stored(self) -> TerminalBatch:
        """The stored entries (views, slot order) of a non-empty buffer."""
        search_step = None if self.search_step is None else self.search_step[: self.size]
        return TerminalBatch(self.x[: self.size], self.log_reward[: self.size], search_step)

    def state_dict(self) -> dict:
        return {
            "x": None if self.x is None else self.x[: self.size].copy(),
            "log_reward": self.log_reward[: self.size].copy(),
            "search_step": None if self.search_step is None else self.search_step[: self.size].copy(),
            "size": self.size,
            "head": self.head,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.size, self.head = state["size"], state["head"]
        if state["x"] is not None:
            self.x = np.empty((self.capacity, state["x"].shape[1]), dtype=np.float32)
            self.x[: self.size] = state["x"]
        self.log_reward[: self.size] = state["log_reward"]
        self.search_step = None
        if state["search_step"] is not None:
            self.search_step = np.empty(self.capacity, dtype=np.int64)
            self.search_step[: self.size] = state["search_step"]
        self.rng.bit_generator.state = state["rng"]
