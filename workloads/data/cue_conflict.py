"""Cue-conflict sets of ColorDSprites as in WCST-ML (Scimeca et al., arXiv:2110.03095), drawn without replacement.

For K chosen cues, each with L levels, cue k's level l is the latent value index

    level_k(l) = round(linspace(0, size_k - 1, L))[l]          (numpy's round: halves to even)

L defaults to the fewest values among the chosen cues (3 for {color, shape, scale}). A cue is one latent, or
"position" (pos_x and pos_y together, both at their level l).

    diagonal set            every chosen cue at the same level l; label l
    off-diagonal set of k   cue k at level l = the label, every other chosen cue at a uniformly random level
                            (by default never all equal to l: such a point lies on the diagonal)

Latents that are no chosen cue's are uniform over all their values. Every set is stratified (the labels of
each split differ in count by at most one) and uniform within a label.

Unlike the reference, which samples with replacement and leaks duplicates between train and test, every
latent row drawn here is distinct across ALL splits of ALL sets: no image appears twice, in one set or in
two. A request that cannot be met (more rows than distinct latents are left) is an error saying which.

A model that follows another cue j instead of k scores on k's off-diagonal set, in expectation,

    1 / L                                    when diagonal points may appear,
    (L^(K-2) - 1) / (L^(K-1) - 1)            when they are excluded (the default; 1/4 for K = L = 3),

see `other_cue_accuracy`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from workloads.data.color_dsprites import (
    LATENT_NAMES,
    LATENT_SIZES,
    ColorDSpritesConfig,
    ColorDSpritesDataset,
    flat_index,
)
from workloads.data.splits import Splits
from workloads.typed_config import StrictConfig

CUES: dict[str, tuple[str, ...]] = {
    "color": ("color",),
    "shape": ("shape",),
    "scale": ("scale",),
    "orientation": ("orientation",),
    "pos_x": ("pos_x",),
    "pos_y": ("pos_y",),
    "position": ("pos_x", "pos_y"),
}
"""Cue name -> the latents it sets (each to its own level l)."""


def cue_size(cue: str) -> int:
    """Number of distinct values of a cue (for "position": of each coordinate)."""
    return min(LATENT_SIZES[LATENT_NAMES.index(latent)] for latent in _cue_latents(cue))


def cue_levels(cue: str, num_levels: int) -> np.ndarray:
    """Latent value indices of the cue's L levels: round(linspace(0, size - 1, L)), int64 [L]."""
    size = cue_size(cue)
    if not 2 <= num_levels <= size:
        raise ValueError(f"cue {cue!r} has {size} values: num_levels must lie in [2, {size}], got {num_levels}")
    return np.round(np.linspace(0, size - 1, num_levels)).astype(np.int64)


def other_cue_accuracy(num_levels: int, num_cues: int, excludes_diagonal: bool = True) -> float:
    """Expected accuracy on one cue's off-diagonal set of a model that follows another chosen cue."""
    if not excludes_diagonal:
        return 1.0 / num_levels
    return (num_levels ** (num_cues - 2) - 1) / (num_levels ** (num_cues - 1) - 1)


def _cue_latents(cue: str) -> tuple[str, ...]:
    if cue not in CUES:
        raise ValueError(f"unknown cue {cue!r}; known: {sorted(CUES)}")
    return CUES[cue]


class SplitSizes(StrictConfig):
    """Rows per split of one set (each stratified over the L labels)."""

    train: int = Field(10_000, ge=0)
    val: int = Field(1_000, ge=0)
    test: int = Field(2_000, ge=0)


class CueConflictConfig(StrictConfig):
    """Which cues conflict, at how many levels, and how many rows each set's splits get."""

    cues: tuple[str, ...] = ("color", "shape", "scale")
    """Chosen cues (keys of CUES), at least 2, no latent shared between two of them."""
    num_levels: int | None = Field(None, ge=2)
    """L; None: the fewest values among the chosen cues."""
    diagonal: SplitSizes = Field(default_factory=SplitSizes)
    off_diagonal: SplitSizes = Field(default_factory=SplitSizes)
    """Sizes of every cue's off-diagonal set (its train split serves models forced onto that cue)."""
    off_diagonal_excludes_diagonal: bool = True
    """Off-diagonal sets never hold a point with all cues at one level (WCST-ML's "not on the diagonal")."""
    seed: int = 0

    @model_validator(mode="after")
    def _check_cues(self) -> CueConflictConfig:
        if len(self.cues) < 2:
            raise ValueError(f"cue conflict needs at least 2 cues, got {list(self.cues)}")
        latents = [latent for cue in self.cues for latent in _cue_latents(cue)]
        if len(set(latents)) != len(latents):
            raise ValueError(f"cues {list(self.cues)} set the same latent twice (e.g. position and pos_x)")
        if self.num_levels is not None:
            for cue in self.cues:
                cue_levels(cue, self.num_levels)
        return self

    @property
    def levels(self) -> int:
        """L, resolved."""
        return self.num_levels or min(cue_size(cue) for cue in self.cues)


@dataclass(frozen=True)
class LabelledLatents:
    """Latent rows [N, 6] (int64, ColorDSprites order) and their labels [N] (int64, a level index)."""

    latents: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def dataset(self, config: ColorDSpritesConfig | None = None) -> ColorDSpritesDataset:
        """The rows as images, labelled."""
        return ColorDSpritesDataset(self.latents, self.labels, config)


@dataclass(frozen=True)
class CueConflictSets:
    """The diagonal set and each chosen cue's off-diagonal set, each split into train / val / test."""

    cues: tuple[str, ...]
    num_levels: int
    levels: dict[str, np.ndarray]
    """Cue -> latent value index of each level [L]."""
    diagonal: Splits[LabelledLatents]
    off_diagonal: dict[str, Splits[LabelledLatents]]


@dataclass(frozen=True)
class _LevelPool:
    """All latent rows with the chosen cues at one of the given level combinations, the other latents free.

    Row p of the pool: combination p // F, free latents the mixed-radix digits of p % F (F = free combinations).
    """

    combos: np.ndarray  # [C, K] level index of each chosen cue
    cue_columns: tuple[tuple[int, ...], ...]  # latent columns of each chosen cue
    levels: tuple[np.ndarray, ...]  # latent value index of each level, per chosen cue
    free_columns: tuple[int, ...]

    @property
    def free_sizes(self) -> tuple[int, ...]:
        return tuple(LATENT_SIZES[c] for c in self.free_columns)

    @property
    def size(self) -> int:
        return len(self.combos) * int(np.prod(self.free_sizes, dtype=np.int64))

    def latents(self, rows: np.ndarray) -> np.ndarray:
        free_count = int(np.prod(self.free_sizes, dtype=np.int64))
        combos = self.combos[rows // free_count]  # [N, K]
        out = np.zeros((len(rows), len(LATENT_NAMES)), dtype=np.int64)
        for k, columns in enumerate(self.cue_columns):
            for column in columns:
                out[:, column] = self.levels[k][combos[:, k]]
        if self.free_columns:
            free_digits = np.unravel_index(rows % free_count, self.free_sizes)
            for column, digits in zip(self.free_columns, free_digits):
                out[:, column] = digits
        return out


def _per_label(total: int, num_levels: int) -> np.ndarray:
    """Stratified counts [L] summing to total; the first total % L labels get one more."""
    return total // num_levels + (np.arange(num_levels) < total % num_levels)


def _draw_distinct(pool: _LevelPool, n: int, taken: set[int], rng: np.random.Generator, what: str) -> np.ndarray:
    """n latent rows drawn uniformly from the pool without replacement, none of whose flat indices is in taken.

    Drawing n + |taken| distinct candidates (or the whole pool) leaves at least n after dropping the taken ones
    whenever n can be met at all.
    """
    if n == 0:
        return np.zeros((0, len(LATENT_NAMES)), dtype=np.int64)
    candidates = rng.choice(pool.size, size=min(pool.size, n + len(taken)), replace=False)
    latents = pool.latents(candidates)
    keep = ~np.isin(flat_index(latents), np.fromiter(taken, dtype=np.int64, count=len(taken)))
    if keep.sum() < n:
        left = int(keep.sum())
        raise ValueError(
            f"{what} needs {n} distinct latent rows (train + val + test) but only {left} are left: "
            f"it has {pool.size} in all, {pool.size - left} already drawn for earlier sets; "
            f"ask for fewer rows, or choose cues that leave more latents free"
        )
    latents = latents[keep][:n]
    taken.update(flat_index(latents).tolist())
    return latents


def _draw_set(
    pools: list[_LevelPool], sizes: SplitSizes, taken: set[int], rng: np.random.Generator, name: str
) -> Splits[LabelledLatents]:
    """One set's splits: for each label l, train + val + test rows from pools[l], then each split shuffled."""
    num_levels = len(pools)
    per_split = [_per_label(n, num_levels) for n in (sizes.train, sizes.val, sizes.test)]  # 3 x [L]
    parts: list[list[LabelledLatents]] = [[], [], []]
    for label, pool in enumerate(pools):
        counts = [int(c[label]) for c in per_split]
        latents = _draw_distinct(pool, sum(counts), taken, rng, f"{name} label {label}")
        bounds = np.cumsum([0, *counts])
        for s in range(3):
            rows = latents[bounds[s] : bounds[s + 1]]
            parts[s].append(LabelledLatents(rows, np.full(len(rows), label, dtype=np.int64)))
    splits = []
    for chunks in parts:
        order = rng.permutation(sum(len(c) for c in chunks))
        splits.append(
            LabelledLatents(
                np.concatenate([c.latents for c in chunks])[order], np.concatenate([c.labels for c in chunks])[order]
            )
        )
    return Splits(*splits)


def make_cue_conflict_sets(config: CueConflictConfig | None = None) -> CueConflictSets:
    """Diagonal and off-diagonal sets for config.cues at L levels, all rows distinct (see the module docstring).

    Drawn in a fixed order (diagonal, then off-diagonal sets in config.cues order) from one seeded generator.
    """
    config = config or CueConflictConfig()
    num_levels = config.levels
    levels = {cue: cue_levels(cue, num_levels) for cue in config.cues}
    cue_columns = tuple(tuple(LATENT_NAMES.index(lat) for lat in CUES[cue]) for cue in config.cues)
    chosen = {c for columns in cue_columns for c in columns}
    free_columns = tuple(c for c in range(len(LATENT_NAMES)) if c not in chosen)
    num_cues = len(config.cues)
    all_combos = np.array(list(itertools.product(range(num_levels), repeat=num_cues)), dtype=np.int64)  # [L^K, K]
    on_diagonal = (all_combos == all_combos[:, :1]).all(axis=1)

    def pool(mask: np.ndarray) -> _LevelPool:
        return _LevelPool(all_combos[mask], cue_columns, tuple(levels.values()), free_columns)

    rng = np.random.default_rng(config.seed)
    taken: set[int] = set()
    diagonal_pools = [pool(on_diagonal & (all_combos[:, 0] == label)) for label in range(num_levels)]
    diagonal = _draw_set(diagonal_pools, config.diagonal, taken, rng, "diagonal set")
    allowed = ~on_diagonal if config.off_diagonal_excludes_diagonal else np.ones(len(all_combos), dtype=bool)
    off_diagonal = {}
    for k, cue in enumerate(config.cues):
        pools = [pool(allowed & (all_combos[:, k] == label)) for label in range(num_levels)]
        off_diagonal[cue] = _draw_set(pools, config.off_diagonal, taken, rng, f"off-diagonal set of {cue!r}")
    return CueConflictSets(tuple(config.cues), num_levels, levels, diagonal, off_diagonal)
