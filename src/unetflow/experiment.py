"""One experiment, as the train stage runs it: its network, its training settings and its split.

An experiment is named in the config (`experiments:`); with `folds: k` it becomes k runs, one per fold, each an
`Experiment` with its `Fold`. `to_dict` holds exactly the settings that change the trained model, so it is both
the train rule's `params:` and the settings part of the model's fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unetflow.folds import Fold
from unetflow.models.registry import model_config
from unetflow.settings import check, model_changing
from unetflow.training.settings import TrainSettings


@dataclass(frozen=True)
class Experiment:
    """A run of an experiment: `name` (e.g. `baseline`, or `baseline/fold2`), the model and training settings,
    and the fold when it is one of a cross-validation."""

    name: str
    model: dict[str, Any]
    train: TrainSettings
    fold: Fold | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Experiment:
        """From {"name", "model", "train", "fold": null or {"index", "count"}}, every section checked against the
        config schema (missing settings at their defaults)."""
        unknown = set(d) - {"name", "model", "train", "fold"}
        if unknown:
            raise ValueError(f"experiment: unknown entries {sorted(unknown)}")
        model = check("model", d.get("model"))
        model_config(model)  # the architecture's own checks (padding, norm, ...)
        fold = Fold(**d["fold"]) if d.get("fold") else None
        return cls(str(d.get("name", "")), model, TrainSettings.from_dict(d.get("train") or {}), fold)

    def to_dict(self) -> dict[str, Any]:
        train = model_changing(self.train.to_dict())
        fold = {"index": self.fold.index, "count": self.fold.count} if self.fold else None
        return {"name": self.name, "model": self.model, "train": train, "fold": fold}

    @property
    def tile_sizes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per model axis: the input tile that `train.tile` output pixels need, and that output."""
        geometries = model_config(self.model).geometries
        inputs = tuple(g.input_size(self.train.tile) for g in geometries)
        outputs = tuple(
            g.output_size(n) if g.padding == "valid" else n for g, n in zip(geometries, inputs, strict=True)
        )
        return inputs, outputs
