"""Per-structure replay of terminal torsions with their energies (Torsional-GFN, arXiv:2507.11759).

The reference kept a buffer of 500 terminal states per (molecule, local structure) L. Here one ring buffer
per L (the newest `capacity` states of L are kept), and a replay draw is uniform over the structures that
have states, then uniform within the structure, so that the structures a batch sees are balanced whatever
their sampling history:
    s ~ U{L : |buffer_L| > 0},   x ~ U(buffer_s)
Replayed states are trained on by backward trajectories tau ~ PB(. | x) with their stored energies (no
energy evaluation).

Seeds: states known before training, kept for good (never evicted) and drawn with probability `seed_share`
within their structure. The learner's seeds are the torsions of its molecule's MD frames (a physical sample at T,
learner.replay_seeds): on-policy training alone can settle on a broad, safe region and never find a narrow
joint mode (anisole: planar C-O with a staggered methyl), which backward trajectories from the seeds show it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workloads.torsional.config import TorsionalConfig
from workloads.torsional.learner import TorsionalTerminals


class StructureReplayBuffer:
    def __init__(self, capacity_per_structure: int, seed: int, seed_share: float = 0.0):
        self.capacity, self.seed_share = capacity_per_structure, seed_share
        self.rng = np.random.default_rng(seed)
        self.seeds: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        """structure -> (angles [n, K_max], energies [n]) kept for good."""
        self.angles: dict[int, np.ndarray] = {}
        """structure (entry index) -> [n, K_max] float32 radians (NaN-padded), oldest first."""
        self.energies: dict[int, np.ndarray] = {}
        """structure -> [n] float64 kcal/mol."""

    def __len__(self) -> int:
        return sum(len(e) for e in self.energies.values())

    def ping(self) -> None:
        """Answers once the actor is alive (it runs as the replay-buffer role)."""

    def size(self) -> int:
        """len(self), callable on the Ray actor (which does not expose __len__)."""
        return len(self)

    def add(self, terminals: TorsionalTerminals) -> int:
        """Append each structure's new states, dropping its oldest beyond capacity; returns the total size."""
        for s in np.unique(terminals.entry_index).tolist():
            rows = terminals.entry_index == s
            angles = np.concatenate([self.angles.get(s, terminals.angles[:0]), terminals.angles[rows]])
            energies = np.concatenate([self.energies.get(s, np.zeros(0)), terminals.energy_kcal_mol[rows]])
            self.angles[s], self.energies[s] = angles[-self.capacity :], energies[-self.capacity :]
        return len(self)

    def add_seeds(self, terminals: TorsionalTerminals) -> None:
        for s in np.unique(terminals.entry_index).tolist():
            rows = terminals.entry_index == s
            self.seeds[s] = (terminals.angles[rows], terminals.energy_kcal_mol[rows])

    def sample(self, n: int) -> TorsionalTerminals | None:
        """n states (structure uniform, then a seed w.p. seed_share, else a stored state, uniform); None while
        the buffer is empty."""
        structures = sorted({s for s, e in self.energies.items() if len(e)} | set(self.seeds))
        if not structures or n <= 0:
            return None
        rows = []
        for s in self.rng.choice(structures, size=n).tolist():
            stored = (self.angles[s], self.energies[s]) if len(self.energies.get(s, ())) else None
            use_seed = s in self.seeds and (stored is None or self.rng.random() < self.seed_share)
            angles, energies = self.seeds[s] if use_seed else stored
            i = self.rng.integers(len(energies))
            rows.append((s, angles[i], energies[i]))
        structure, angles, energies = zip(*rows)
        return TorsionalTerminals(
            np.array(structure, dtype=np.int64),
            np.stack(angles).astype(np.float32),
            np.array(energies, dtype=np.float64),
        )

    def get_state(self) -> dict[str, Any]:
        return {
            "angles": self.angles,
            "energies": self.energies,
            "seeds": self.seeds,
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.angles, self.energies, self.seeds = dict(state["angles"]), dict(state["energies"]), dict(state["seeds"])
        self.rng.bit_generator.state = state["rng"]


def replay_rows(config: TorsionalConfig, num_iters: int) -> int:
    """Replayed states to draw for num_iters iterations: replay.share of each batch's trajectories."""
    structures = min(config.structures_per_batch, config.num_train_structures * len(config.train_smiles))
    return max(1, round(config.replay.share * structures * config.trajectories_per_structure)) * num_iters
