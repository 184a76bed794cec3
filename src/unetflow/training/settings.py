"""Training settings as the trainer reads them: defaults and checks come from the config schema (`train` section)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from unetflow.augment import AugmentParams
from unetflow.settings import check, defaults

_D = defaults("train")
# Settings of the job rather than of the training: the scheduler's business, passed to the trainer separately.
JOB_SETTINGS = ("device", "threads", "gpus", "mem_mb", "runtime")


@dataclass(frozen=True)
class TrainSettings:
    iterations: int = _D["iterations"]
    batch_size: int = _D["batch_size"]
    tile: int = _D["tile"]
    optimizer: str = _D["optimizer"]
    lr: float = _D["lr"]
    momentum: float = _D["momentum"]
    weight_decay: float = _D["weight_decay"]
    schedule: str = _D["schedule"]
    loss: str = _D["loss"]
    cldice_weight: float = _D["cldice_weight"]
    cldice_iterations: int = _D["cldice_iterations"]
    hard_pixel_fraction: float = _D["hard_pixel_fraction"]
    hard_tile_share: float = _D["hard_tile_share"]
    hard_tile_top: float = _D["hard_tile_top"]
    seed: int = _D["seed"]
    validate_every: int = _D["validate_every"]
    select: str = _D["select"]
    checkpoint_every: int = _D["checkpoint_every"]
    workers: int = _D["workers"]
    threshold: float = _D["threshold"]
    precision: str = _D["precision"]
    ema: float = _D["ema"]
    augment: AugmentParams = field(default_factory=AugmentParams)

    def __post_init__(self) -> None:
        check("train", self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSettings:
        """Settings from a `train` config section (missing ones at their defaults; job settings ignored)."""
        values = check("train", d)
        for key in JOB_SETTINGS:
            values.pop(key)
        augment = AugmentParams(**values.pop("augment"))
        return cls(augment=augment, **values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
