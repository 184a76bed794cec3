"""Label conventions: which pixels are cell, and which cell each pixel belongs to.

Accepted ground truth: binary with 255 = cell, 0 = membrane (ISBI); binary with 1 = cell, 0 = membrane;
or instance ids (0 = membrane/background, every other integer one cell). Anything else is refused with
the values found, so a mislabelled file fails at ingest rather than as a silently wrong weight map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

BINARY_255 = "binary255"
BINARY_01 = "binary01"
INSTANCES = "instances"
CONVENTIONS = (BINARY_255, BINARY_01, INSTANCES)


@dataclass
class LabelSurvey:
    """Running summary of label values, built chunk by chunk so large volumes need not be read whole."""

    values: set[int] = field(default_factory=set)
    many: bool = False
    minimum: float = np.inf
    non_integer: bool = False
    max_kept: int = 16

    def add(self, chunk: np.ndarray) -> None:
        if chunk.size == 0:
            return
        self.minimum = min(self.minimum, float(chunk.min()))
        floating = np.issubdtype(chunk.dtype, np.floating)
        if floating and (not np.all(np.isfinite(chunk)) or np.any(chunk != np.round(chunk))):
            self.non_integer = True
            return
        if not self.many:
            self.values.update(int(v) for v in np.unique(chunk))
            if len(self.values) > self.max_kept:
                self.many = True

    def merge(self, other: LabelSurvey) -> None:
        """Add what another survey (of another slab, say) found."""
        self.minimum = min(self.minimum, other.minimum)
        self.non_integer = self.non_integer or other.non_integer
        self.many = self.many or other.many
        if not self.many:
            self.values |= other.values
            self.many = len(self.values) > self.max_kept

    def to_dict(self) -> dict[str, Any]:
        minimum = None if self.minimum == np.inf else self.minimum
        return {"values": sorted(self.values), "many": self.many, "minimum": minimum, "non_integer": self.non_integer}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSurvey:
        minimum = np.inf if d["minimum"] is None else float(d["minimum"])
        return cls(set(int(v) for v in d["values"]), bool(d["many"]), minimum, bool(d["non_integer"]))

    def convention(self, source: str = "labels", declared: str | None = None) -> str:
        """The convention these values follow, or ValueError naming what was found.

        Binary labels (0/255 or 0/1) are recognized by their values. Anything else may be instance ids or an image
        given by mistake (a grayscale slice, a probability map), which values alone cannot tell apart: it is
        accepted only when `declared` says `instances`, and refused otherwise, naming the setting that declares it."""
        shown = sorted(self.values)[: self.max_kept]
        found = f"{shown}{' and more' if self.many else ''}"
        if self.non_integer:
            raise ValueError(
                f"{source}: labels must be integers (binary 0/255, 0/1 or instance ids); found non-integer values"
            )
        if self.minimum < 0:
            raise ValueError(
                f"{source}: labels must be >= 0 (binary 0/255, 0/1 or instance ids); found minimum {self.minimum:g}"
            )
        if declared is not None and declared not in CONVENTIONS:
            raise ValueError(f"{source}: unknown label convention {declared!r}; expected one of {CONVENTIONS}")
        binary = BINARY_255 if not self.many and self.values <= {0, 255} else None
        if binary is None and not self.many and self.values <= {0, 1}:
            binary = BINARY_01
        if declared == INSTANCES:
            return INSTANCES
        if declared is not None:
            allowed = {0, 255} if declared == BINARY_255 else {0, 1}
            if self.many or not self.values <= allowed:
                raise ValueError(f"{source}: declared {declared} ({sorted(allowed)}) but found the values {found}")
            return declared
        if binary is not None:
            return binary
        raise ValueError(
            f"{source}: labels with the values {found} are neither 255 = cell / 0 = membrane nor 1 / 0; if they are "
            "instance ids (0 = membrane, every other value one cell), declare it with the dataset setting "
            "label_convention: instances (datasets.<name>.label_convention; `unetflow ingest --label-convention`)"
        )

    @property
    def has_membrane_and_cell(self) -> bool:
        """Whether both classes occur (0 and some value above it)."""
        return self.many or (0 in self.values and any(v > 0 for v in self.values))


def survey(labels: np.ndarray) -> LabelSurvey:
    s = LabelSurvey()
    s.add(np.asarray(labels))
    return s


def recorded_convention(attrs: Mapping[str, Any], path: object) -> str:
    """The label convention that ingest recorded in a label store's attributes; an error naming the store otherwise."""
    convention = attrs.get("label_convention")
    if convention is None:
        raise ValueError(f"{path}: no label convention recorded; run `unetflow ingest --kind labels`")
    if convention not in CONVENTIONS:
        raise ValueError(f"{path}: unknown label convention {convention!r}; expected one of {CONVENTIONS}")
    return convention


def cell_mask(labels: np.ndarray, convention: str) -> np.ndarray:
    """True where a pixel belongs to a cell (not membrane/background)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown label convention {convention!r}; expected one of {CONVENTIONS}")
    return np.asarray(labels) > 0


def connectivity_structure(ndim: int, connectivity: int) -> np.ndarray:
    """Neighbourhood for `ndim`-D components: 4/8 in 2D, 6/18/26 in 3D."""
    rank = {4: 1, 8: 2, 6: 1, 18: 2, 26: 3}.get(connectivity)
    if rank is None or rank > ndim or (ndim == 2 and connectivity not in (4, 8)):
        raise ValueError(f"connectivity {connectivity} is not defined in {ndim}D (2D: 4, 8; 3D: 6, 18, 26)")
    return ndimage.generate_binary_structure(ndim, rank)


def structure_for(dims: int, connectivity: int) -> np.ndarray:
    """The 3 x 3 x 3 neighbourhood of cells in a zyx volume: a 2D one in the middle plane for per-slice cells
    (`dims` 2: `connectivity` 4 or 8), else 3D (6, 18 or 26)."""
    if dims == 3:
        return connectivity_structure(3, connectivity)
    if connectivity not in (4, 8):
        raise ValueError(f"segment.connectivity {connectivity} is for 3D; per slice (dims 2) use 4 or 8")
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = connectivity_structure(2, connectivity)
    return structure


def instance_labels(labels: np.ndarray, convention: str, connectivity: int = 4) -> np.ndarray:
    """Cells as instance ids (int32, 0 = no cell): connected components of binary labels, given ids otherwise."""
    labels = np.asarray(labels)
    if convention == INSTANCES:
        return labels.astype(np.int64, copy=False)
    mask = cell_mask(labels, convention)
    out, _ = ndimage.label(mask, structure=connectivity_structure(mask.ndim, connectivity))
    return out
