import pytest
import torch
from torch import nn

from unetflow.training.averaging import WeightAverage


def constant_(module: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


def test_first_updates_ramp_the_decay_up():
    model = nn.Linear(3, 2)
    constant_(model, 1.0)
    average = WeightAverage(model, decay=0.99)
    constant_(model, 3.0)
    average.update(model)  # decay min(0.99, 2 / 11)
    expected = 1.0 * (2 / 11) + 3.0 * (9 / 11)
    assert torch.allclose(average.model.weight, torch.full((2, 3), expected))
    average.update(model)  # decay 3 / 12
    expected = expected * (3 / 12) + 3.0 * (9 / 12)
    assert torch.allclose(average.model.bias, torch.full((2,), expected))


def test_average_follows_a_steady_model_and_leaves_it_alone():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    constant_(model, 0.5)
    model[1].running_mean.fill_(2.0)
    model[1].num_batches_tracked.fill_(7)
    for _ in range(300):
        average.update(model)
    assert average.current_decay() == 0.9
    assert torch.allclose(average.model[0].weight, torch.full((2, 2), 0.5))
    assert torch.allclose(average.model[1].running_mean, torch.full((2,), 2.0))  # float buffers are averaged
    assert int(average.model[1].num_batches_tracked) == 7  # counters are copied
    assert not average.model.training and not any(p.requires_grad for p in average.model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_state_round_trip_and_bad_decay():
    model = nn.Linear(2, 1)
    average = WeightAverage(model, decay=0.9)
    constant_(model, 2.0)
    average.update(model)
    restored = WeightAverage(nn.Linear(2, 1), decay=0.9)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 1 and torch.equal(restored.model.weight, average.model.weight)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="train.ema"):
            WeightAverage(model, decay=bad)
