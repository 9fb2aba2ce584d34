"""A bounded number of in-flight calls between two roles: backpressure instead of growth.

The producer hands `submit` a call to make on a consumer and its arguments (`submit(buffer.add.remote, batch)`);
while `max_in_flight` calls are pending, `submit` first waits for the oldest to finish, so a slow
consumer slows the producer and the object store holds at most `max_in_flight` batches.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ray


class BoundedInFlight:
    def __init__(self, max_in_flight: int):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._pending: deque[ray.ObjectRef] = deque()
        self.peak_in_flight = 0
        self.blocked_s = 0.0
        """Seconds the producer waited on the consumer: how much backpressure there was."""

    def submit(self, call: Callable[..., ray.ObjectRef], *args: Any) -> ray.ObjectRef:
        """`call(*args)` once fewer than `max_in_flight` calls are pending; its ObjectRef."""
        while len(self._pending) >= self.max_in_flight:
            self._finish_oldest()
        ref = call(*args)
        self._pending.append(ref)
        self.peak_in_flight = max(self.peak_in_flight, len(self._pending))
        return ref

    def _finish_oldest(self) -> None:
        started = time.perf_counter()
        ray.get(self._pending.popleft())  # re-raises the consumer's error here, where it is handled
        self.blocked_s += time.perf_counter() - started

    def drain(self) -> None:
        while self._pending:
            self._finish_oldest()

    def discard(self) -> None:
        """Forget pending calls (their consumer died and will be restored from a checkpoint)."""
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)
