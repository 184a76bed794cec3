"""Settings shared by every architecture (each model's config extends them and is stored in its checkpoints),
and the base class through which every model reports its geometry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from torch import nn

from unetflow.models.geometry import Geometry
from unetflow.settings import check


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an encoder-decoder network. `from_dict` treats None as "this architecture's default"."""

    architecture: ClassVar[str] = ""
    paddings: ClassVar[tuple[str, ...]] = ("valid", "same")

    in_channels: int = 1
    classes: int = 2
    base_width: int = 64
    levels: int = 5
    padding: str = "valid"
    norm: str = "none"
    dropout: float = 0.5
    dims: int = 2
    slice_context: int = 0

    def __post_init__(self) -> None:
        check("model", self.to_dict())  # each value on its own; below, what depends on the architecture
        if self.padding not in self.paddings:
            raise ValueError(
                f"model.padding must be one of {self.paddings} for {self.architecture}, got {self.padding!r}"
            )
        if self.slice_context and self.dims != 2:
            raise ValueError(
                f"model.slice_context (neighbouring slices on each side given to a 2D model) is for dims 2 only; "
                f"got {self.slice_context} with dims {self.dims}"
            )

    @property
    def class_names(self) -> list[str]:
        """What each output channel holds: membrane and cell for the two-class networks, numbered otherwise."""
        return ["membrane", "cell"] if self.classes == 2 else [f"class{i}" for i in range(self.classes)]

    @property
    def input_channels(self) -> int:
        """Channels of the first layer: each of the 2 * slice_context + 1 slices brings in_channels (2.5D input:
        a membrane faint in one section is often clear in its neighbours)."""
        return self.in_channels * (2 * self.slice_context + 1)

    @property
    def widths(self) -> list[int]:
        """Channels per resolution level: base_width doubling at every level."""
        return [self.base_width * 2**i for i in range(self.levels)]

    def live_channels(self, level: int) -> int:
        """Channels held in memory at `level` at the peak of an inference pass (an upper estimate used to size
        tiles): the U-Net keeps each level's skip while its decoder holds the up-convolution, the concatenation
        and the convolution output, five maps of the level's width."""
        return 5 * self.widths[level]

    @property
    def pool_factors(self) -> tuple[int, ...]:
        return (2,) * self.dims

    @property
    def geometries(self) -> tuple[Geometry, ...]:
        """Tile arithmetic per spatial axis (they differ only with anisotropic pooling)."""
        return tuple(Geometry(self.levels, 2, self.padding, f) for f in self.pool_factors)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in d.items() if k != "architecture" and v is not None}
        unknown = set(given) - known
        if unknown:
            raise ValueError(
                f"unknown model settings for {cls.architecture}: {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {"architecture": self.architecture, **values}


class SegmentationNet(nn.Module):
    """A network built from a ModelConfig; its tile geometry is derived from that config, never typed in."""

    config: ModelConfig

    @property
    def geometries(self) -> tuple[Geometry, ...]:
        return self.config.geometries

    @property
    def geometry(self) -> Geometry:
        """Tile arithmetic of the in-plane (last) axes."""
        return self.config.geometries[-1]
