import pytest
import torch
import torch.nn.functional as F

from unetflow.losses import crop_like, segmentation_loss


def test_weighted_ce_matches_definition():
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 4, 4)
    target = torch.randint(0, 2, (1, 8, 8))
    weight = torch.rand(1, 8, 8) + 0.5
    t, w = target[:, 2:6, 2:6], weight[:, 2:6, 2:6]
    logp = F.log_softmax(logits, 1)
    expected = -(w * logp.gather(1, t[:, None])[:, 0]).mean()
    assert segmentation_loss("weighted_ce", logits, target, weight).item() == pytest.approx(expected.item(), rel=1e-6)


def test_crop_and_options():
    logits = torch.zeros(2, 2, 3, 3)
    assert crop_like(torch.arange(25).reshape(1, 5, 5), logits).tolist() == [[[6, 7, 8], [11, 12, 13], [16, 17, 18]]]
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    assert segmentation_loss("ce", logits, target).item() == pytest.approx(0.6931, abs=1e-4)
    assert segmentation_loss("dice_ce", logits, target).item() > 0.6931
    weight = torch.full((2, 3, 3), 2.0)
    dice = segmentation_loss("dice_ce", logits, target).item() - 0.6931
    assert segmentation_loss("weighted_dice_ce", logits, target, weight).item() == pytest.approx(
        2 * 0.6931 + dice, abs=1e-4
    )
    with pytest.raises(ValueError, match="train.loss"):
        segmentation_loss("focal", logits, target)
    for kind in ("weighted_ce", "weighted_dice_ce"):
        with pytest.raises(ValueError, match="weight map"):
            segmentation_loss(kind, logits, target)


def logits_of(membrane: torch.Tensor, confidence: float = 6.0) -> torch.Tensor:
    """(N, 2, H, W) logits that say boundary (class 0) where the (N, H, W) `membrane` is True, cell elsewhere."""
    m = membrane.float()
    return torch.stack([m, 1 - m], 1) * confidence


def test_soft_skeleton_thins_a_bar_to_its_centre_line():
    from unetflow.losses import soft_skeleton

    bar = torch.zeros(1, 1, 32, 32)
    bar[..., 12:19, 4:28] = 1.0
    skeleton = soft_skeleton(bar, 5)
    assert (skeleton <= bar + 1e-6).all()
    rows = skeleton[0, 0, :, 8:24].sum(1)
    assert rows[15] > 0.9 * rows.sum()


def test_cldice_charges_a_gap_in_a_membrane_more_than_an_equal_area_bulge():
    from unetflow.losses import cldice_loss

    truth = torch.zeros(1, 32, 32, dtype=torch.bool)
    truth[:, :, 14:17] = True  # a vertical membrane splitting two cells
    target = (~truth).long()
    gap, bulge = truth.clone(), truth.clone()
    gap[:, 10:14, 14:17] = False  # 12 boundary pixels missing: the two cells merge
    bulge[:, 10:14, 17:20] = True  # 12 extra boundary pixels: topology intact
    ce = [F.cross_entropy(logits_of(m), target).item() for m in (gap, bulge)]
    assert ce[0] == pytest.approx(ce[1], rel=1e-5)
    perfect, with_gap, with_bulge = (cldice_loss(logits_of(m), target, 3).item() for m in (truth, gap, bulge))
    assert perfect < 0.01
    assert with_gap > 2 * with_bulge > 0


def test_cldice_term_is_added_and_differentiable():
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 12, 12, requires_grad=True)
    target = torch.randint(0, 2, (1, 16, 16))
    weight = torch.rand(1, 16, 16) + 0.5
    from unetflow.losses import cldice_loss

    base = segmentation_loss("weighted_ce", logits, target, weight)
    total = segmentation_loss("weighted_ce", logits, target, weight, cldice_weight=0.5, cldice_iterations=3)
    expected = base + 0.5 * cldice_loss(logits, target[:, 2:14, 2:14], 3)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    volume = torch.randn(1, 2, 4, 8, 8)
    assert torch.isfinite(segmentation_loss("ce", volume, torch.randint(0, 2, (1, 4, 8, 8)), cldice_weight=1.0))


def test_hard_pixel_fraction_averages_only_the_hardest_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 10, 10, requires_grad=True)
    target = torch.randint(0, 2, (2, 10, 10))
    weight = torch.rand(2, 10, 10) + 0.5
    per_pixel = F.cross_entropy(logits, target, reduction="none") * weight
    hardest = per_pixel.flatten().sort(descending=True).values[:50].mean()
    loss = segmentation_loss("weighted_ce", logits, target, weight, hard_fraction=0.25)
    assert loss.item() == pytest.approx(hardest.item(), rel=1e-6)
    assert loss.item() > segmentation_loss("weighted_ce", logits, target, weight).item()
    assert segmentation_loss("ce", logits, target, hard_fraction=1.0).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6
    )
    loss.backward()  # only the chosen pixels carry a gradient
    touched = (logits.grad.abs().sum(1) > 0).sum().item()
    assert touched == 50
    with pytest.raises(ValueError, match="hard_pixel_fraction"):
        segmentation_loss("ce", logits, target, hard_fraction=0.0)
