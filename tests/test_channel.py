"""The bound on in-flight calls holds under a slow consumer, and the producer is slowed by it."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray

from actors.channel import BoundedInFlight


@ray.remote(num_cpus=0)
class SlowConsumer:
    """Takes `delay_s` per batch and records how many batches were queued when each arrived."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.received = 0

    def add(self, batch: np.ndarray) -> int:
        time.sleep(self.delay_s)
        self.received += len(batch)
        return self.received


def test_bound_holds_and_producer_waits(ray_cluster):
    delay_s, batches, bound = 0.05, 30, 3
    consumer = SlowConsumer.remote(delay_s)
    channel = BoundedInFlight(bound)
    started = time.perf_counter()
    for i in range(batches):
        batch = ray.put(np.full(1000, i, dtype=np.float32))
        channel.submit(consumer.add.remote, batch)
        assert len(channel) <= bound
    produced_s = time.perf_counter() - started
    channel.drain()
    assert channel.peak_in_flight == bound
    # Unbounded, the producer would finish in milliseconds; bounded, it waits for all but `bound` batches.
    assert produced_s >= (batches - bound) * delay_s * 0.9
    assert channel.blocked_s >= (batches - bound) * delay_s * 0.8
    assert ray.get(consumer.add.remote(np.zeros(0))) == batches * 1000


def test_consumer_error_reaches_the_producer(ray_cluster):
    consumer = SlowConsumer.remote(0.0)
    channel = BoundedInFlight(1)
    channel.submit(consumer.add.remote, np.zeros(3))
    channel.submit(consumer.add.remote, None)  # len(None) fails inside the consumer
    with pytest.raises(ray.exceptions.RayTaskError):
        channel.drain()


def test_rejects_a_bound_below_one():
    with pytest.raises(ValueError):
        BoundedInFlight(0)
