"""Checkpoints carry the model's settings with its weights, so inference needs nothing but the file."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetflow.models.registry import build_model
from unetflow.store import atomic_output


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> None:
    """Write atomically: a kill mid-write never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.config.to_dict(), "state_dict": model.state_dict(), **extra}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        # Tensors and plain data only: a pickle that would run code (os.system, ...) is refused, never executed.
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: refused to load: it holds more than tensors and plain data (a model file can carry code; "
            f"unetflow loads weights only). {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0]})") from exc
    if not isinstance(payload, dict) or "model" not in payload or "state_dict" not in payload:
        raise ValueError(f"{path}: not a unetflow checkpoint (expected keys 'model' and 'state_dict')")
    return payload


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model of a checkpoint in eval mode, and the checkpoint's other entries."""
    payload = load_checkpoint(path, map_location)
    model = build_model(payload["model"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload
