"""Cross-validation folds over the slices of labelled stacks (standard library only, so that the workflow can
plan a fold's jobs without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fold:
    """Fold `index` of `count`: it holds out slices [floor(index n / count), floor((index + 1) n / count)) of every
    labelled stack of n slices and trains on the rest."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 2 or not 0 <= self.index < self.count:
            raise ValueError(f"a fold needs 0 <= index < count and count >= 2, got {self.index} of {self.count}")

    def held_out(self, slices: int) -> tuple[int, int]:
        if slices < self.count:
            raise ValueError(f"{self.count} folds need at least {self.count} slices per stack, got {slices}")
        return self.index * slices // self.count, (self.index + 1) * slices // self.count

    def training_ranges(self, slices: int) -> list[tuple[int, int]]:
        start, stop = self.held_out(slices)
        return [r for r in ((0, start), (stop, slices)) if r[1] > r[0]]

    @property
    def name(self) -> str:
        return f"fold{self.index}"
