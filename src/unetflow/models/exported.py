"""The network as other tools run it: raw tiles in, class probabilities of the same size out.

unetflow's own inference reads each tile with its context from the volume (mirrored at the volume's borders) and
applies the softmax itself. A tool that knows nothing of the network's geometry hands over a tile and expects a
same-sized answer, so the exported module mirrors the tile by the network's margin (torch's `reflect`, the edge
pixel not repeated, as `unetflow.blocks.mirror_indices`), runs the network, crops what the margin added and
applies the softmax. Pixels within the margin of a tile's border then see mirrored rather than real context: a
tool that tiles a large image overlaps its tiles by the margin (the `halo` of the bioimage.io description) and
keeps only their interiors, which equal the pipeline's output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetflow.models.registry import build_model, model_config


class ExportedNetwork(nn.Module):
    """A unetflow network (built from its checkpoint's `model` settings) wrapped for same-size tiles."""

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__()
        self.net = build_model(settings)
        self.margins = tuple(g.margin for g in self.net.geometries)  # (before, after) per spatial axis
        self.trims = tuple(0 if g.padding == "valid" else g.margin[0] for g in self.net.geometries)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = [p for before, after in reversed(self.margins) for p in (before, after)]  # last axis first
        logits = self.net(F.pad(x, pad, mode="reflect"))
        crop = tuple(slice(t, t + n) for t, n in zip(self.trims, x.shape[2:], strict=True))
        return logits[(slice(None), slice(None), *crop)].float().softmax(1)


def valid_sizes(settings: dict[str, Any]) -> list[tuple[int, int]]:
    """(smallest, step) of the tile sizes the exported network takes along each spatial axis: sizes whose padded
    input is a valid input of the network and whose output then covers the tile exactly, larger than the margin
    (a mirror cannot reach further than the tile)."""
    out = []
    for g in model_config(settings).geometries:
        before, after = g.margin
        fits = [
            n
            for n in range(max(before, after) + 1, 3 * (before + after) + 4 * g.step + 2)
            if (g.output_size(n + before + after) == n if g.padding == "valid" else (n + before + after) % g.step == 0)
        ]
        if len(fits) < 2:
            raise ValueError(f"no regular tile sizes found for geometry {g}")
        out.append((fits[0], fits[1] - fits[0]))
    return out
