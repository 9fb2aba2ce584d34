"""Reward-evaluation role and the pool of them, for a reward r that is expensive to evaluate.

`RewardWorker` (one per actor) builds one reward model from a picklable `build_reward()` and evaluates
log r(x, c) of the batches sent to it, without gradient. `PooledReward` (in the learner's process) is itself a
reward, `log_r(x, targets) -> [B]`: it splits a batch into one chunk per worker (at least `min_chunk` rows each),
sends them at once and gathers them in order. One batch is in flight at a time, so nothing queues up unbounded.
When a worker dies, the pool waits for Ray to restart it (max_restarts=-1) and sends its chunk again: no row is
lost or counted twice.

Values only: relative trajectory balance and the RL baselines use log r as a number, so the learner sends it the
terminal states of its batch; a method that needs grad log r (guidance) keeps a reward of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import torch
from torch import Tensor

from actors.energy import ACTOR_DIED
from actors.named import NamedActors


class RewardWorker:
    def __init__(self, build_reward: Callable[[], Any], num_cpus: float = 1.0):
        torch.set_num_threads(max(1, math.floor(num_cpus)))
        self.reward = build_reward()
        self.rows = 0

    def ping(self) -> None:
        """Answers once the actor is alive (its reward built)."""

    def log_r(self, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """x [B, ...] float32, targets [B] int64 -> log r [B] float32."""
        with torch.no_grad():
            values = self.reward.log_r(torch.from_numpy(x), torch.from_numpy(targets))
        self.rows += len(x)
        return values.float().numpy()

    def rows_evaluated(self) -> int:
        """Rows this process evaluated since it (re)started."""
        return self.rows


class PooledReward(NamedActors):
    """log r through the reward actors. `workers`: handles, or names in `namespace` (NamedActors)."""

    def __init__(self, workers: list[Any], namespace: str | None = None, min_chunk: int = 16):
        super().__init__(workers, namespace)
        self.min_chunk = min_chunk
        self.resent_chunks = 0

    def log_r(self, x: Tensor, targets: Tensor) -> Tensor:
        """x [B, ...], targets [B] -> log r [B] on x's device, in x's dtype."""
        rows = x.detach().float().cpu().numpy()
        labels = targets.detach().cpu().numpy().astype(np.int64)
        chunks = max(1, min(len(self.workers), len(rows) // self.min_chunk))
        bounds = np.linspace(0, len(rows), chunks + 1).astype(int)
        spans = list(zip(bounds[:-1], bounds[1:]))
        refs = [self._send(w, rows[a:b], labels[a:b]) for w, (a, b) in enumerate(spans)]
        values = [self._gather(w, ref, rows[a:b], labels[a:b]) for w, (ref, (a, b)) in enumerate(zip(refs, spans))]
        return torch.from_numpy(np.concatenate(values)).to(device=x.device, dtype=x.dtype)

    def _send(self, w: int, rows: np.ndarray, labels: np.ndarray) -> ray.ObjectRef:
        return self.workers[w].log_r.remote(rows, labels)

    def _gather(self, w: int, ref: ray.ObjectRef, rows: np.ndarray, labels: np.ndarray, timeout_s: float = 120.0):
        """The chunk's values; while its worker is dead, wait for Ray's restart and send it again."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return ray.get(ref)
            except ACTOR_DIED:
                if time.monotonic() > deadline:
                    raise
                self.resent_chunks += 1
                time.sleep(0.5)
                ref = self._send(w, rows, labels)
