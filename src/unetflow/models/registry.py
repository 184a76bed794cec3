"""The architectures by name: their configs (settings and geometry, no weights) and the networks built from them."""

from __future__ import annotations

from typing import Any

from torch import nn

from unetflow.models.config import ModelConfig, SegmentationNet
from unetflow.models.unet import UNet, UNetConfig
from unetflow.models.unet3p import UNet3PConfig, UNet3Plus
from unetflow.models.unetpp import UNetPlusPlus, UNetPPConfig

ARCHITECTURES: dict[str, tuple[type[ModelConfig], type[SegmentationNet]]] = {
    "unet": (UNetConfig, UNet),
    "unetpp": (UNetPPConfig, UNetPlusPlus),
    "unet3p": (UNet3PConfig, UNet3Plus),
}


def _architecture(settings: dict[str, Any]) -> tuple[type[ModelConfig], type[SegmentationNet]]:
    arch = settings.get("architecture") or "unet"
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.architecture {arch!r} is not available; available: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def model_config(settings: dict[str, Any]) -> ModelConfig:
    """The checked config of a `model:` section or a checkpoint's `model` entry (None: the architecture's default)."""
    config_class, _ = _architecture(settings)
    return config_class.from_dict(settings)


def build_model(settings: dict[str, Any]) -> nn.Module:
    """A freshly initialized network from its settings."""
    _, net_class = _architecture(settings)
    return net_class(model_config(settings))
