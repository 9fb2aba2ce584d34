"""Replay buffer: all three prioritizations, rank frequencies, capacity (ring overwrite)."""

import numpy as np
import pytest

from workloads.samplers.replay import ReplayBuffer, TerminalBatch


def _batch(log_r, offset=0.0):
    log_r = np.asarray(log_r, dtype=np.float32)
    x = np.stack([log_r + offset, -log_r], 1)
    return TerminalBatch(x, log_r)


def test_terminal_batch_concat():
    b = TerminalBatch.concat([_batch([1.0, 2.0]), _batch([3.0])])
    assert len(b) == 3 and b.x.dtype == np.float32 and b.x.shape == (3, 2)


def test_capacity_and_ring_overwrite():
    buf = ReplayBuffer(capacity=10, prioritization="uniform", seed=0)
    buf.add(_batch(np.arange(6)))
    assert len(buf) == 6
    buf.add(_batch(np.arange(6, 13)))
    assert len(buf) == 10
    assert sorted(buf.log_reward.tolist()) == list(range(3, 13))  # the 3 oldest were overwritten
    buf.add(_batch(np.arange(100, 125)))  # larger than capacity: newest 10 survive
    assert sorted(buf.log_reward.tolist()) == list(range(115, 125))


@pytest.mark.parametrize("prioritization", ["rank", "reward", "uniform"])
def test_all_modes_sample(prioritization):
    buf = ReplayBuffer(capacity=100, prioritization=prioritization, rank_k=0.01, seed=0)
    buf.add(_batch(np.linspace(-5, 0, 50)))
    s = buf.sample(64)
    assert len(s) == 64 and s.x.shape == (64, 2)
    assert np.allclose(s.x[:, 1], -s.log_reward)  # rows stay paired
    p = buf.probabilities()
    assert np.isclose(p.sum(), 1.0) and np.all(p > 0)


def test_rank_frequencies_match_formula():
    N, k, n = 20, 0.5, 200_000
    rng = np.random.default_rng(1)
    log_r = rng.permutation(N).astype(np.float32)  # distinct rewards in shuffled slots
    buf = ReplayBuffer(capacity=N, prioritization="rank", rank_k=k, seed=0)
    buf.add(_batch(log_r))
    s = buf.sample(n)
    rank = (N - 1 - s.log_reward).astype(int)  # rank 0 = highest log R = N-1
    freq = np.bincount(rank, minlength=N) / n
    w = 1.0 / (k * N + np.arange(N))
    p = w / w.sum()
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n))


def test_reward_prioritization_is_stable_and_proportional():
    buf = ReplayBuffer(capacity=10, prioritization="reward", seed=0)
    buf.add(_batch([1000.0, 1000.0 + np.log(3.0)]))  # exp overflows without max-subtraction
    assert np.allclose(buf.probabilities(), [0.25, 0.75], atol=1e-4)
    uni = ReplayBuffer(capacity=10, prioritization="uniform", seed=0)
    uni.add(_batch([0.0, 5.0]))
    assert np.allclose(uni.probabilities(), [0.5, 0.5])


def test_state_dict_round_trip():
    buf = ReplayBuffer(capacity=8, prioritization="rank", seed=3)
    buf.add(_batch(np.arange(11)))
    other = ReplayBuffer(capacity=8, prioritization="rank", seed=99)
    other.load_state_dict(buf.state_dict())
    a, b = buf.sample(5), other.sample(5)
    assert np.array_equal(a.x, b.x)


def test_rank_prioritization_draws_fewer_manywell_lighter_modes():
    """Why Manywell's lighter modes fade under rank replay: a well's lighter mode (a_j < 0, 15.6 % of the
    mass) has log R about 1.7 lower, so a rank-prioritized draw from exact samples under-represents it. At
    k = 0.01 (the paper's) one draw keeps about 0.64 of the share, and local search (start states) and
    replay (training states) each draw once; uniform keeps it."""
    from workloads.samplers.targets import make_target

    target = make_target("manywell")
    x = target.sample(100_000, seed=0)
    exact = TerminalBatch(x.numpy(), target.log_reward(x).numpy())
    share = {}
    for prioritization, k in [("rank", 0.01), ("rank", 1.0), ("uniform", 0.01)]:
        buf = ReplayBuffer(capacity=len(exact), prioritization=prioritization, rank_k=k, seed=1)
        buf.add(exact)
        share[prioritization, k] = float((buf.sample(20_000).x[:, 0::2] < 0).mean())
    exact_share = float((exact.x[:, 0::2] < 0).mean())
    assert abs(exact_share - 0.156) < 0.003
    assert abs(share["uniform", 0.01] - exact_share) < 0.006
    assert share["rank", 0.01] < 0.75 * exact_share
    assert share["rank", 0.01] < share["rank", 1.0] < exact_share
