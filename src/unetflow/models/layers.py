"""Building blocks shared by the U-Net family, written once for 2D and 3D."""

from __future__ import annotations

import torch
from torch import nn


def conv_cls(dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def up_cls(dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]


def pool_cls(dims: int) -> type[nn.Module]:
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]


def norm_layer(kind: str, dims: int, channels: int) -> nn.Module:
    """Normalization after each convolution: none (the paper), batch or group norm."""
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)
    if kind == "group":
        groups = min(8, channels)
        while channels % groups:
            groups -= 1
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"model.norm must be one of none, batch, group; got {kind!r}")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalization and ReLU."""

    def __init__(self, dims: int, cin: int, cout: int, padding: str, norm: str, convs: int = 2):
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [
                conv_cls(dims)(cin if i == 0 else cout, cout, 3, padding=0 if padding == "valid" else 1),
                norm_layer(norm, dims, cout),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


def center_crop(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Crop the spatial dimensions of `x` to those of `like`, centered (the paper's skip crop)."""
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], like.shape[2:], strict=True):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]


def he_init(module: nn.Module) -> None:
    """Gaussian init with std sqrt(2 / fan_in), as in the paper; biases zero."""
    if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
