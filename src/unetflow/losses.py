"""Pixel-wise losses on the valid output: targets and weights are center-cropped to the logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("weighted_ce", "ce", "dice_ce")


def crop_like(t: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Center-crop the trailing spatial dims of `t` (N, *spatial) to those of `logits` (N, C, *spatial)."""
    spatial = logits.shape[2:]
    offset = t.ndim - len(spatial)
    index = [slice(None)] * offset
    for have, want in zip(t.shape[offset:], spatial, strict=True):
        if have < want:
            raise ValueError(f"target spatial size {tuple(t.shape[offset:])} smaller than output {tuple(spatial)}")
        start = (have - want) // 2
        index.append(slice(start, start + want))
    return t[tuple(index)]


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The paper's energy: softmax cross-entropy weighted per pixel by w(x), averaged over pixels."""
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    return (ce * weight.float()).mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over classes."""
    probs = logits.float().softmax(1)
    onehot = F.one_hot(target.long(), probs.shape[1]).movedim(-1, 1).float()
    dims = tuple(range(2, probs.ndim)) + (0,)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


def segmentation_loss(
    kind: str,
    logits: torch.Tensor | list[torch.Tensor],
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss `kind` (weighted_ce, ce, dice_ce) between logits and the cropped target (and weights).

    A list of logits (deep supervision) gives the mean of the losses of its members.
    """
    if isinstance(logits, list | tuple):
        return torch.stack([segmentation_loss(kind, one, target, weight) for one in logits]).mean()
    target = crop_like(target, logits)
    if kind == "weighted_ce":
        if weight is None:
            raise ValueError("loss 'weighted_ce' needs a weight map")
        return weighted_cross_entropy(logits, target, crop_like(weight, logits))
    ce = F.cross_entropy(logits.float(), target.long())
    if kind == "ce":
        return ce
    if kind == "dice_ce":
        return ce + soft_dice_loss(logits, target)
    raise ValueError(f"train.loss must be one of {LOSSES}; got {kind!r}")
