"""Exponential moving average of a model's weights (Polyak averaging).

With batch size 1 and a large learning rate the weights of one iteration are a noisy sample: validation errors
jump between checkpoints and the best one is partly luck. The average over the last ~1/(1 - decay) iterations
is a smoother model that validates, and is kept, in place of the raw weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from unetflow.settings import check


class WeightAverage:
    """An averaged copy of `model`; `update(model)` after each optimizer step. The effective decay ramps up as
    (1 + n) / (10 + n) over the first updates, so early weights (random initialization) fade out quickly."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        check("train", {"ema": decay})
        if decay == 0:
            raise ValueError("train.ema 0 means no weight average; none is built")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - self.current_decay()
        current = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                v.lerp_(current[k], weight)
            else:  # counters such as batch norm's num_batches_tracked
                v.copy_(current[k])

    def state_dict(self) -> dict:
        return {"updates": self.updates, "state_dict": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["state_dict"])
