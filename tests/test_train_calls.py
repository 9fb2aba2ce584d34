"""Cutting an evaluation's training into several `train` calls (what the samplers driver does for training curves'
points without replay) trains the same: the same iterations, the same draws, the same weights. (The torsional
learner pipelines its batches within a call, so its driver does not cut.)"""

from __future__ import annotations

import torch

from workloads.samplers.config import SamplerConfig
from workloads.samplers.learner import SamplerLearner


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_sampler_learner_trains_the_same_in_one_call_or_four():
    config = SamplerConfig(num_steps=5, batch_size=16, hidden_dim=16, time_embedding_dim=8, total_iters=20)
    whole, cut = SamplerLearner(config, seed=3), SamplerLearner(config, seed=3)
    whole.train(20)
    for _ in range(4):
        cut.train(5)
    assert whole.step == cut.step == 20
    assert _same_weights(whole.policy, cut.policy) and torch.equal(whole.log_z, cut.log_z)
    untrained = SamplerLearner(config, seed=3)
    assert not _same_weights(whole.policy, untrained.policy)  # the check can fail
