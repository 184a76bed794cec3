"""Pixel-wise losses on the valid output: targets and weights are center-cropped to the logits.

Optionally a clDice term (Shit et al. 2021) on the boundary class (0) is added to any of them: the soft skeleton of
the true membranes must lie inside the predicted ones and vice versa. A gap of a few pixels in a long membrane
costs cross-entropy little, but it merges two cells; clDice charges it by the length of membrane centreline lost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("weighted_ce", "ce", "dice_ce", "weighted_dice_ce")


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


def hardest_mean(per_pixel: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the largest `fraction` of per-pixel losses (bootstrapped cross-entropy, Wu et al. 2016): easy
    pixels deep inside cells stop diluting the gradient of the few ambiguous ones; 1.0 is the plain mean."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train.hard_pixel_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return per_pixel.mean()
    flat = per_pixel.flatten()
    return flat.topk(max(1, round(fraction * flat.numel())), sorted=False).values.mean()


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, hard_fraction: float = 1.0
) -> torch.Tensor:
    """The paper's energy: softmax cross-entropy weighted per pixel by w(x), averaged over pixels (over the
    hardest `hard_fraction` of them)."""
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    return hardest_mean(ce * weight.float(), hard_fraction)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over classes."""
    probs = logits.float().softmax(1)
    onehot = F.one_hot(target.long(), probs.shape[1]).movedim(-1, 1).float()
    dims = tuple(range(2, probs.ndim)) + (0,)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Soft morphological erosion of (N, C, *spatial) maps: a min-pool over the axis-aligned cross."""
    pool = F.max_pool2d if x.ndim == 4 else F.max_pool3d
    spatial = x.ndim - 2
    mins = []
    for axis in range(spatial):
        kernel = tuple(3 if a == axis else 1 for a in range(spatial))
        padding = tuple(1 if a == axis else 0 for a in range(spatial))
        mins.append(-pool(-x, kernel, stride=1, padding=padding))
    return torch.stack(mins).amin(0)


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Soft morphological dilation: a max-pool over the 3x3 (3x3x3) neighbourhood."""
    pool = F.max_pool2d if x.ndim == 4 else F.max_pool3d
    return pool(x, 3, stride=1, padding=1)


def soft_skeleton(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Differentiable skeleton of soft masks in [0, 1]: what iterated erosions leave that an opening would remove.
    `iterations` must reach the largest structure radius (in pixels) to thin it to a line."""
    skeleton = F.relu(x - soft_dilate(soft_erode(x)))
    for _ in range(iterations):
        x = soft_erode(x)
        delta = F.relu(x - soft_dilate(soft_erode(x)))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def cldice_loss(logits: torch.Tensor, target: torch.Tensor, iterations: int, eps: float = 1.0) -> torch.Tensor:
    """1 - clDice of the boundary class (0): the harmonic mean of the predicted skeleton's share inside the true
    boundary (topology precision) and the true skeleton's share inside the predicted boundary (sensitivity)."""
    predicted = logits.float().softmax(1)[:, :1]
    true = (target == 0).float()[:, None]
    with torch.no_grad():  # a constant: no graph to keep
        skel_true = soft_skeleton(true, iterations)
    skel_pred = soft_skeleton(predicted, iterations)
    precision = ((skel_pred * true).sum() + eps) / (skel_pred.sum() + eps)
    sensitivity = ((skel_true * predicted).sum() + eps) / (skel_true.sum() + eps)
    return 1 - 2 * precision * sensitivity / (precision + sensitivity)


def pixel_loss(
    kind: str, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, hard_fraction: float = 1.0
) -> torch.Tensor:
    """Loss `kind` (weighted_ce, ce, dice_ce, weighted_dice_ce: the paper's weighted cross-entropy plus soft Dice)
    between logits and a target (and weights) of the same spatial size; the cross-entropy averages over the hardest
    `hard_fraction` of pixels."""
    if kind in ("weighted_ce", "weighted_dice_ce"):
        if weight is None:
            raise ValueError(f"loss {kind!r} needs a weight map")
        ce = weighted_cross_entropy(logits, target, weight, hard_fraction)
        return ce if kind == "weighted_ce" else ce + soft_dice_loss(logits, target)
    ce = hardest_mean(F.cross_entropy(logits.float(), target.long(), reduction="none"), hard_fraction)
    if kind == "ce":
        return ce
    if kind == "dice_ce":
        return ce + soft_dice_loss(logits, target)
    raise ValueError(f"train.loss must be one of {LOSSES}; got {kind!r}")


def segmentation_loss(
    kind: str,
    logits: torch.Tensor | list[torch.Tensor],
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    cldice_weight: float = 0.0,
    cldice_iterations: int = 5,
    hard_fraction: float = 1.0,
) -> torch.Tensor:
    """Loss `kind` (one of LOSSES) between logits and the cropped target (and weights), its
    cross-entropy over the hardest `hard_fraction` of pixels, plus `cldice_weight` times the clDice loss of the
    boundary class.

    A list of logits (deep supervision) gives the mean of the losses of its members.
    """
    if isinstance(logits, list | tuple):
        losses = [
            segmentation_loss(kind, one, target, weight, cldice_weight, cldice_iterations, hard_fraction)
            for one in logits
        ]
        return torch.stack(losses).mean()
    target = crop_like(target, logits)
    loss = pixel_loss(kind, logits, target, None if weight is None else crop_like(weight, logits), hard_fraction)
    if cldice_weight > 0:
        loss = loss + cldice_weight * cldice_loss(logits, target, cldice_iterations)
    return loss
