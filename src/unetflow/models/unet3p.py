"""U-Net 3+ (Huang et al. 2020): full-scale skip connections and an optional classification-guided module.

Every decoder level fuses all encoder levels at or above it (max-pooled down) and all deeper decoder levels
(bilinearly upsampled), each through a 3x3 convolution to `cat_width` channels (64 in the paper), into
`levels * cat_width` channels (5 x 64 = 320). The classification-guided module (CGM) predicts from the
deepest features whether the image holds any foreground and zeroes the segmentation where it says no.
Same padding only: bilinear upsampling has no valid-convolution analogue, so seams are handled by blending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from unetflow.models.config import ModelConfig, SegmentationNet
from unetflow.models.layers import ConvBlock, conv_cls, he_init, norm_layer, pool_cls


@dataclass(frozen=True)
class UNet3PConfig(ModelConfig):
    architecture: ClassVar[str] = "unet3p"
    paddings: ClassVar[tuple[str, ...]] = ("same",)  # full-scale skips upsample bilinearly

    padding: str = "same"
    norm: str = "batch"
    cat_width: int = 64
    deep_supervision: bool = False
    classification_guided: bool = False

    def live_channels(self, level: int) -> int:
        """The encoder map, the full-scale branches, their concatenation and the fused decoder map."""
        return self.widths[level] + 3 * self.levels * self.cat_width


def _conv(dims: int, cin: int, cout: int, norm: str) -> nn.Sequential:
    return nn.Sequential(conv_cls(dims)(cin, cout, 3, padding=1), norm_layer(norm, dims, cout), nn.ReLU(inplace=True))


class UNet3Plus(SegmentationNet):
    def __init__(self, config: UNet3PConfig):
        super().__init__()
        self.config = config
        c, d = config, config.dims
        w = c.widths
        fused = c.levels * c.cat_width
        self.pool = pool_cls(d)(2)
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.encoders = nn.ModuleList(
            ConvBlock(d, c.input_channels if i == 0 else w[i - 1], w[i], "same", c.norm) for i in range(c.levels)
        )
        # branches[i][k]: the 3x3 conv that brings level k's features to decoder level i.
        self.branches = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in range(c.levels - 1):
            row = nn.ModuleList()
            for k in range(c.levels):
                cin = w[k] if k <= i or k == c.levels - 1 else fused
                row.append(_conv(d, cin, c.cat_width, c.norm))
            self.branches.append(row)
            self.fuse.append(_conv(d, fused, fused, c.norm))
        levels_out = c.levels - 1 if c.deep_supervision else 1
        self.heads = nn.ModuleList(conv_cls(d)(fused, c.classes, 3, padding=1) for _ in range(levels_out))
        if c.classification_guided:
            self.cgm = nn.Sequential(nn.Dropout(c.dropout), conv_cls(d)(w[-1], 2, 1))
        self.apply(he_init)

    def _resample(self, x: torch.Tensor, level_from: int, level_to: int) -> torch.Tensor:
        if level_from < level_to:
            factor = 2 ** (level_to - level_from)
            pool = F.max_pool2d if self.config.dims == 2 else F.max_pool3d
            return pool(x, factor)
        if level_from > level_to:
            mode = "bilinear" if self.config.dims == 2 else "trilinear"
            return F.interpolate(x, scale_factor=2 ** (level_from - level_to), mode=mode, align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        levels = self.config.levels
        enc = []
        for i, block in enumerate(self.encoders):
            x = block(x if i == 0 else self.pool(x))
            if i >= levels - 2:
                x = self.dropout(x)
            enc.append(x)
        dec: dict[int, torch.Tensor] = {levels - 1: enc[-1]}
        for i in range(levels - 2, -1, -1):
            parts = []
            for k in range(levels):
                source = enc[k] if k <= i else dec[k]
                parts.append(self.branches[i][k](self._resample(source, k, i)))
            dec[i] = self.fuse[i](torch.cat(parts, dim=1))
        if self.config.deep_supervision and self.training:
            outs = [self._resample(head(dec[i]), i, 0) for i, head in enumerate(self.heads)]
        else:
            outs = [self.heads[0](dec[0])]
        if self.config.classification_guided:
            pooled = F.adaptive_max_pool2d if self.config.dims == 2 else F.adaptive_max_pool3d
            present = pooled(self.cgm(enc[-1]), 1).argmax(1, keepdim=True).float()
            outs = [o * present for o in outs]
        return outs if (self.config.deep_supervision and self.training) else outs[0]
