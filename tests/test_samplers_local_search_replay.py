"""Local search with replay through the replay-buffer role (a plain class, no Ray): every prioritization
mode samples and runs a round, rank prioritization honours its k, MALA's step size adapts to the target
acceptance across rounds, and searched states keep their round's learner step, from which the learner
reports the replay batch's staleness."""

import numpy as np
import pytest
import torch

from actors.replay_buffer import ReplayBufferRole
from workloads.samplers.config import ReplayConfig, SamplerConfig
from workloads.samplers.learner import SamplerLearner
from workloads.samplers.replay import ReplayBuffer, TerminalBatch
from workloads.samplers.targets import make_target

SMALL_ROUND = {"local_search_batch": 32, "mala_steps": 10, "mala_burn_in": 5}


def _forward_states(n: int = 200, seed: int = 0) -> TerminalBatch:
    """Exact 25GMM samples, jittered off their modes (as a sampler's would be)."""
    target = make_target("gmm25")
    x = target.sample(n, seed) + 0.5 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed + 1))
    return TerminalBatch(x.numpy(), target.log_reward(x).numpy())


@pytest.mark.parametrize(
    "prioritization, searched_states",
    [("rank", "accepted"), ("reward", "accepted"), ("uniform", "accepted"), ("rank", "final")],
)
def test_every_prioritization_samples_and_runs_a_local_search_round(prioritization, searched_states):
    role = ReplayBufferRole(
        ReplayConfig(prioritization=prioritization, searched_states=searched_states, **SMALL_ROUND), "gmm25", seed=0
    )
    assert role.sample(8) is None and role.local_search(learner_step=0) == {}  # nothing to search yet
    assert role.add(_forward_states()) == 200
    metrics = role.local_search(learner_step=40)
    assert 0.0 < metrics["train/mala_acceptance"] <= 1.0 and metrics["train/mala_step_size"] > 0
    batch = role.sample(64)
    assert len(batch) == 64 and np.all(batch.search_step == 40)
    target = make_target("gmm25")
    assert np.allclose(batch.log_reward, target.log_reward(torch.from_numpy(batch.x)).numpy(), atol=1e-4)
    added = metrics["train/searched_states_added"]
    chains, steps_kept = SMALL_ROUND["local_search_batch"], SMALL_ROUND["mala_steps"] - SMALL_ROUND["mala_burn_in"]
    assert added == (
        chains if searched_states == "final" else round(metrics["train/mala_acceptance"] * chains * steps_kept)
    )
    assert role.size() == 200 + added
    restored = ReplayBufferRole(
        ReplayConfig(prioritization=prioritization, searched_states=searched_states, **SMALL_ROUND), "gmm25", seed=9
    )
    restored.set_state(role.get_state())
    again, expected = restored.sample(16), role.sample(16)
    assert np.array_equal(again.x, expected.x) and np.array_equal(again.search_step, expected.search_step)


def test_rank_prioritization_honours_k():
    """p(i) ~ 1 / (k |D| + rank(i)) with the configured k, in both buffers of the role."""
    probabilities = {}
    for k in (0.01, 1.0):
        role = ReplayBufferRole(ReplayConfig(prioritization="rank", rank_k=k, **SMALL_ROUND), "gmm25", seed=0)
        forward = _forward_states()
        role.add(forward)
        role.local_search(learner_step=0)
        for buffer in (role.forward_buffer, role.searched_buffer):
            log_r = buffer.log_reward[: len(buffer)]
            rank = np.argsort(np.argsort(-log_r, kind="stable"), kind="stable")  # 0 = highest log R
            w = 1.0 / (k * len(buffer) + rank)
            assert np.allclose(buffer.probabilities(), w / w.sum())
        probabilities[k] = role.forward_buffer.probabilities()
    # a small k concentrates on the best states: the top state is far likelier than under k = 1
    top = np.argmax(forward.log_reward)
    assert probabilities[0.01][top] > 5 * probabilities[1.0][top]


def test_mala_step_size_adapts_to_the_target_acceptance_across_rounds():
    config = ReplayConfig(local_search_batch=200, mala_steps=40, mala_burn_in=30, mala_step_size=1e-3)
    role = ReplayBufferRole(config, "gmm25", seed=0)
    role.add(_forward_states(1000))
    rounds = [role.local_search(learner_step=100 * i) for i in range(4)]
    assert rounds[-1]["train/mala_step_size"] > 10 * config.mala_step_size  # grew from a too-small start
    for m in rounds[1:]:
        assert abs(m["train/mala_acceptance"] - config.mala_target_acceptance) < 0.1, rounds


def test_buffer_keeps_search_steps_through_the_ring_and_rejects_mixing():
    buffer = ReplayBuffer(capacity=4, prioritization="uniform", seed=0)
    buffer.add(TerminalBatch(np.zeros((3, 2)), np.zeros(3), search_step=7))
    buffer.add(TerminalBatch(np.ones((3, 2)), np.ones(3), search_step=np.array([8, 9, 10])))  # overwrites 2
    assert sorted(buffer.search_step.tolist()) == [7, 8, 9, 10]
    batch = buffer.sample(50)
    assert np.all((batch.x[:, 0] == 1) == (batch.search_step > 7))  # rows stay paired
    with pytest.raises(AssertionError, match="mixing"):
        buffer.add(TerminalBatch(np.zeros((1, 2)), np.zeros(1)))


TINY = {
    "num_steps": 5,
    "batch_size": 16,
    "hidden_dim": 16,
    "time_embedding_dim": 8,
    "eval_samples": 100,
    "total_iters": 20,
    "replay": ReplayConfig(enabled=True),
}


def test_learner_reports_replay_staleness_from_the_search_steps():
    """Odd steps 1 and 3 train on replay rows [0, 16) (searched at step 0) and [16, 32) (step 1):
    staleness (1 - 0 + 3 - 1) / 2 = 1.5."""
    learner = SamplerLearner(SamplerConfig(**TINY), seed=0)
    states = _forward_states(32)
    searched = TerminalBatch(states.x, states.log_reward, search_step=np.repeat([0, 1], 16))
    metrics, _ = learner.train(4, searched)
    assert metrics["train/replay_staleness_iters"] == 1.5
    metrics, _ = learner.train(4, states)  # states of no local-search round: no staleness
    assert "train/replay_staleness_iters" not in metrics
