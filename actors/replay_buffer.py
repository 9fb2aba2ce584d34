"""The replay-buffer role: owns the buffers of terminal states, serves prioritized batches and
runs local search (MALA on the target) on request, next to the data it needs.

As in the paper (arXiv:2402.05098, "+ LS"): forward samples enter `forward_buffer`; a local-search
round runs MALA from a prioritized batch of it and puts the accepted post-burn-in proposals (or the
chains' final states), with the learner step at the round's start, in `searched_buffer`; replay batches
(for backward trajectories) are served from `searched_buffer`. The logic is
`workloads.samplers.local_search.LocalSearchReplay`; this role adds the thread count, the target by name
and the calls every role answers (`ping`, `size`, `get_state`, `set_state`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from workloads.samplers.config import ReplayConfig
from workloads.samplers.local_search import LocalSearchReplay
from workloads.samplers.targets import make_target
from workloads.samplers.targets.base import Target


class ReplayBufferRole(LocalSearchReplay):
    def __init__(self, config: ReplayConfig, target: str | Callable[[], Target], seed: int, num_cpus: float = 1.0):
        """`target`: a named target of the samplers family, or a picklable function that builds one (e.g. the
        outsourced family's noise-space target, from its cached generator)."""
        torch.set_num_threads(max(1, math.floor(num_cpus)))
        super().__init__(config, make_target(target) if isinstance(target, str) else target(), seed)

    def ping(self) -> None:
        """Answers once the actor is alive."""

    def size(self) -> int:
        """States held in both buffers."""
        return len(self.forward_buffer) + len(self.searched_buffer)

    def local_search_evaluations(self) -> int:
        return self.reward_evaluations

    def get_state(self) -> dict[str, Any]:
        return self.state_dict()

    def set_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state)
