"""U-Net++ (Zhou et al. 2018): nested, dense skip pathways between encoder and decoder, deep supervision.

Node X[i][j] (level i, j-th node of the nested path) fuses every earlier node of its level with the
up-convolved X[i+1][j-1]. With valid padding all inputs are center-cropped to the smallest, so the deepest
path X[0][0] -> X[L-1][0] -> X[0][L-1] sets the geometry, which equals the U-Net's. With deep supervision the
training loss averages the heads on X[0][1..L-1]; inference uses the last head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from unetflow.models.config import ModelConfig, SegmentationNet
from unetflow.models.layers import ConvBlock, center_crop, conv_cls, he_init, pool_cls, up_cls


@dataclass(frozen=True)
class UNetPPConfig(ModelConfig):
    architecture: ClassVar[str] = "unetpp"

    base_width: int = 32
    deep_supervision: bool = True

    def live_channels(self, level: int) -> int:
        """Every node of a level stays alive for the dense skips, plus a concatenation of all of them."""
        return 2 * (self.levels - level + 1) * self.widths[level]


class UNetPlusPlus(SegmentationNet):
    def __init__(self, config: UNetPPConfig):
        super().__init__()
        self.config = config
        c, d = config, config.dims
        w = c.widths
        self.pool = pool_cls(d)(2)
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.nodes = nn.ModuleDict()
        self.ups = nn.ModuleDict()
        for i in range(c.levels):
            self.nodes[f"{i}_0"] = ConvBlock(d, c.input_channels if i == 0 else w[i - 1], w[i], c.padding, c.norm)
        for j in range(1, c.levels):
            for i in range(c.levels - j):
                self.ups[f"{i}_{j}"] = up_cls(d)(w[i + 1], w[i], 2, stride=2)
                self.nodes[f"{i}_{j}"] = ConvBlock(d, (j + 1) * w[i], w[i], c.padding, c.norm)
        n_heads = c.levels - 1 if c.deep_supervision else 1
        self.heads = nn.ModuleList(conv_cls(d)(w[0], c.classes, 1) for _ in range(n_heads))
        self.apply(he_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        levels = self.config.levels
        grid: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(levels):
            x = self.nodes[f"{i}_0"](x if i == 0 else self.pool(x))
            if i >= levels - 2:
                x = self.dropout(x)
            grid[i, 0] = x
        for j in range(1, levels):
            for i in range(levels - j):
                up = self.ups[f"{i}_{j}"](grid[i + 1, j - 1])
                parts = [center_crop(grid[i, k], up) for k in range(j)] + [up]
                grid[i, j] = self.nodes[f"{i}_{j}"](torch.cat(parts, dim=1))
        final = grid[0, levels - 1]
        if self.config.deep_supervision and self.training:
            return [center_crop(head(grid[0, j]), final) for j, head in enumerate(self.heads, start=1)]
        return self.heads[-1](final)
