"""Training settings: the one place they are parsed and checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unetflow.augment import AugmentParams
from unetflow.runtime import PRECISIONS

SCHEDULES = ("none", "poly", "cosine")


@dataclass(frozen=True)
class TrainSettings:
    iterations: int = 2000
    batch_size: int = 1
    tile: int = 388
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.99
    weight_decay: float = 0.0
    schedule: str = "none"
    loss: str = "weighted_ce"
    cldice_weight: float = 0.0
    cldice_iterations: int = 5
    hard_pixel_fraction: float = 1.0
    hard_tile_share: float = 0.0
    hard_tile_top: float = 0.1
    seed: int = 0
    validate_every: int = 250
    checkpoint_every: int = 250
    workers: int = 2
    threshold: float = 0.5
    precision: str = "auto"
    ema: float = 0.0
    augment: AugmentParams = field(default_factory=AugmentParams)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSettings:
        d = dict(d)
        aug = AugmentParams(**d.pop("augment", {}))
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown train settings {sorted(unknown)}")
        s = cls(augment=aug, **d)
        if s.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {s.schedule!r}")
        if s.optimizer not in ("sgd", "adam"):
            raise ValueError(f"train.optimizer must be sgd or adam, got {s.optimizer!r}")
        if s.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {s.precision!r}")
        if not 0.0 <= s.ema < 1.0:
            raise ValueError(f"train.ema must be in [0, 1) (0: no weight averaging), got {s.ema}")
        if s.cldice_weight < 0 or s.cldice_iterations < 1:
            raise ValueError(
                f"train.cldice_weight must be >= 0 and train.cldice_iterations >= 1, got {s.cldice_weight} and "
                f"{s.cldice_iterations}"
            )
        if not 0.0 < s.hard_pixel_fraction <= 1.0:
            raise ValueError(f"train.hard_pixel_fraction must be in (0, 1], got {s.hard_pixel_fraction}")
        if not 0.0 <= s.hard_tile_share <= 1.0:
            raise ValueError(f"train.hard_tile_share must be in [0, 1], got {s.hard_tile_share}")
        if not 0.0 < s.hard_tile_top <= 1.0:
            raise ValueError(f"train.hard_tile_top must be in (0, 1], got {s.hard_tile_top}")
        if s.iterations < 1 or s.batch_size < 1 or s.tile < 1:
            raise ValueError("train.iterations, train.batch_size and train.tile must be >= 1")
        return s
