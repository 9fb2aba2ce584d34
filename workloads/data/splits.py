"""A train / validation / test triple, the one container every data module here returns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Splits(Generic[T]):
    """Three disjoint parts of one data set; what "disjoint" means (indices, latents) is the producer's rule."""

    train: T
    val: T
    test: T

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, part) in the order train, val, test."""
        return iter(zip(SPLIT_NAMES, (self.train, self.val, self.test)))
