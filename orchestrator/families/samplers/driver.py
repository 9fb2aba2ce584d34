"""Diffusion sampler trial: a SamplerLearner actor and a replay-buffer actor running local search on the named
target (orchestrator/driver.py: LocalSearchReplayDriver, for the chunks, the replay batches and the rounds)."""

from __future__ import annotations

from orchestrator.driver import LocalSearchReplayDriver
from orchestrator.placement import TrialContext
from workloads.samplers.learner import SamplerLearner


class SamplerDriver(LocalSearchReplayDriver):
    def __init__(self, ctx: TrialContext):
        config = ctx.config
        super().__init__(ctx, SamplerLearner, config.replay, config.batch_size, config.target)
