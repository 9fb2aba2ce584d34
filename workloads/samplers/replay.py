"""Terminal-state batches and a prioritized replay buffer (arXiv:2402.05098, Sec. 3 "local search").

Rank prioritization (Tripp et al. 2020), rank 0 = highest log R, |D| = number of stored states:
    p(i) = w_i / sum_j w_j,    w_i = 1 / (k |D| + rank(i))
Reward prioritization:   p(i) ~ R(x_i) = exp(log R(x_i))    (computed as softmax of log R)
Uniform:                 p(i) = 1 / |D|

Insertion is O(batch) into a ring (the oldest entries are overwritten when full); ranks are computed
at sampling time (one argsort of the stored log rewards), never on insert.
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

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=np.float32)
        self.log_reward = np.asarray(self.log_reward, dtype=np.float32)
        assert self.x.ndim == 2 and self.log_reward.shape == (self.x.shape[0],)

    def __len__(self) -> int:
        return self.x.shape[0]

    @staticmethod
    def concat(batches: list["TerminalBatch"]) -> "TerminalBatch":
        return TerminalBatch(
            np.concatenate([b.x for b in batches]), np.concatenate([b.log_reward for b in batches])
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
        if n > self.capacity:  # only the newest `capacity` survive
            batch = TerminalBatch(batch.x[-self.capacity :], batch.log_reward[-self.capacity :])
            n = self.capacity
        idx = (self.head + np.arange(n)) % self.capacity  # [n]
        self.x[idx] = batch.x
        self.log_reward[idx] = batch.log_reward
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
        return TerminalBatch(self.x[idx], self.log_reward[idx])

    def state_dict(self) -> dict:
        return {
            "x": None if self.x is None else self.x[: self.size].copy(),
            "log_reward": self.log_reward[: self.size].copy(),
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
        self.rng.bit_generator.state = state["rng"]
