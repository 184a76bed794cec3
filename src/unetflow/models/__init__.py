"""Networks. Each model knows its own geometry (context and valid sizes); see `Geometry`."""

from unetflow.models.geometry import Geometry
from unetflow.models.registry import build_model, model_config
from unetflow.models.unet import UNet, UNetConfig

__all__ = ["Geometry", "UNet", "UNetConfig", "build_model", "model_config"]
