"""The U-Net of Ronneberger, Fischer and Brox (2015), configurable in width, depth, padding and dimensionality.

With the defaults (`base_width=64, levels=5, padding="valid", norm="none", dims=2`) it is the paper's network:
23 convolutions, 572x572 input to 388x388 output, dropout 0.5 at the end of the contracting path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from unetflow.models.config import ModelConfig, SegmentationNet
from unetflow.models.layers import ConvBlock, center_crop, conv_cls, he_init, pool_cls, up_cls


@dataclass(frozen=True)
class UNetConfig(ModelConfig):
    """The paper's network and its configurable relatives (width, depth, padding, norm, 2D/3D, pooling)."""

    architecture: ClassVar[str] = "unet"

    pool: tuple[int, ...] | None = None  # per-axis pooling factor, e.g. (1, 2, 2) for serial-section EM

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool is not None:
            object.__setattr__(self, "pool", tuple(int(p) for p in self.pool))
            if len(self.pool) != self.dims or not set(self.pool) <= {1, 2} or 2 not in self.pool:
                raise ValueError(
                    f"model.pool must give 1 or 2 per axis ({self.dims} axes, at least one 2), got {self.pool}"
                )

    @property
    def pool_factors(self) -> tuple[int, ...]:
        return self.pool or (2,) * self.dims


class UNet(SegmentationNet):
    """Contracting path of ConvBlocks and max-pools, expanding path of up-convolutions and cropped skips."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c, d = config, config.dims
        widths = c.widths
        self.encoders = nn.ModuleList()
        cin = c.input_channels
        for w in widths:
            self.encoders.append(ConvBlock(d, cin, w, c.padding, c.norm))
            cin = w
        factors = c.pool_factors
        self.pool = pool_cls(d)(factors, stride=factors)
        # The paper's Caffe model drops out after the last two levels of the contracting path.
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.ups.append(up_cls(d)(2 * w, w, factors, stride=factors))
            self.decoders.append(ConvBlock(d, 2 * w, w, c.padding, c.norm))
        self.head = conv_cls(d)(widths[0], c.classes, 1)
        self.apply(he_init)

    @property
    def pool_factors(self) -> tuple[int, ...]:
        return self.config.pool_factors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        last = len(self.encoders) - 1
        for i, enc in enumerate(self.encoders):
            x = enc(x)
            if i >= last - 1:
                x = self.dropout(x)
            if i < last:
                skips.append(x)
                x = self.pool(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            x = up(x)
            x = dec(torch.cat([center_crop(skip, x), x], dim=1))
        return self.head(x)
