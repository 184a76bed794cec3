"""Settings shared by every architecture; each model's config extends them and is stored in its checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar


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

    def __post_init__(self) -> None:
        if self.padding not in self.paddings:
            raise ValueError(
                f"model.padding must be one of {self.paddings} for {self.architecture}, got {self.padding!r}"
            )
        if self.dims not in (2, 3):
            raise ValueError(f"model.dims must be 2 or 3, got {self.dims!r}")
        if self.levels < 2:
            raise ValueError(f"model.levels must be >= 2, got {self.levels}")

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
