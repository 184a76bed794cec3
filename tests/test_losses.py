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
    with pytest.raises(ValueError, match="train.loss"):
        segmentation_loss("focal", logits, target)
    with pytest.raises(ValueError, match="weight map"):
        segmentation_loss("weighted_ce", logits, target)
