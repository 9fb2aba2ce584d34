"""Chain actors: MCMC chains in noise space (workloads/outsourced/mcmc.py) spread over actors, so that many run in
parallel, and the pool the learner drives them through.

`ChainsRole` (one per actor) holds its share of the chains, their adapted step size and their random stream, and
advances them on request; it builds its own copy of the target from a picklable `build_target()`. `PooledChains`
(in the learner's process) has `MCMCChains`' surface: `advance(steps)` runs every actor's chains for `steps` at
once and merges their snapshots (states in actor order; acceptance rate and step size the chain-weighted means,
each actor adapting its own step size). One call per actor is in flight at a time. A dead actor's chains are gone:
`advance` raises and the trial reloads its last checkpoint into every actor (`load_state_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import torch

from actors.named import NamedActors
from workloads.outsourced.mcmc import ChainsConfig, MCMCChains, Snapshot
from workloads.samplers.targets.base import Target


def chain_shares(num_chains: int, num_actors: int) -> list[int]:
    """num_chains split over num_actors as evenly as possible (the first ones take the remainder)."""
    if num_actors > num_chains:
        raise ValueError(f"{num_actors} chain actors for {num_chains} chains: set mcmc.num_chains >= the actors")
    return [num_chains // num_actors + (i < num_chains % num_actors) for i in range(num_actors)]


class ChainsRole(MCMCChains):
    def __init__(self, build_target: Callable[[], Target], config: ChainsConfig, seed: int, num_cpus: float = 1.0):
        torch.set_num_threads(max(1, math.floor(num_cpus)))
        super().__init__(build_target(), config, seed)

    def ping(self) -> None:
        """Answers once the actor is alive (its target built)."""

    def get_state(self) -> dict[str, Any]:
        return self.state_dict()

    def set_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state)


class PooledChains(NamedActors):
    """The chains of `workers` (ChainsRole actors: handles, or names in `namespace`)."""

    def advance(self, steps: int) -> Snapshot:
        parts: list[Snapshot] = ray.get([w.advance.remote(steps) for w in self.workers])
        weights = np.array([len(p.z) for p in parts], dtype=float)
        return Snapshot(
            step=parts[0].step,
            reward_evaluations=parts[0].reward_evaluations,  # per chain: the same in every actor
            z=torch.cat([p.z for p in parts]),
            log_reward=torch.cat([p.log_reward for p in parts]),
            acceptance_rate=float(np.average([p.acceptance_rate for p in parts], weights=weights)),
            step_size=float(np.average([p.step_size for p in parts], weights=weights)),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"actors": ray.get([w.get_state.remote() for w in self.workers])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["actors"]) != len(self.workers):
            raise ValueError(
                f"a checkpoint of {len(state['actors'])} chain actors cannot be loaded into {len(self.workers)}: "
                "resume with the sweep's resources.workers.chains.count unchanged"
            )
        ray.get([w.set_state.remote(s) for w, s in zip(self.workers, state["actors"])])
