"""The config schema as the one home of defaults and checks, and the experiment built from it."""

import pytest

from unetflow.experiment import Experiment, Fold
from unetflow.settings import check, defaults, result_settings
from unetflow.stages.weights import WeightParams
from unetflow.training.settings import TrainSettings


def test_defaults_come_from_the_schema_everywhere():
    assert TrainSettings().iterations == defaults("train")["iterations"]
    assert TrainSettings().augment.elastic_sigma == defaults("augment")["elastic_sigma"]
    assert WeightParams().sigma == defaults("weights")["sigma"]
    assert WeightParams().tolerance == defaults("weights")["tolerance"]


def test_bad_values_are_named_with_their_setting():
    with pytest.raises(ValueError, match=r"train\.augment\.flip"):
        check("train", {"augment": {"flip": "yes"}})
    with pytest.raises(ValueError, match=r"weights\.sigma"):
        WeightParams(sigma=0)
    with pytest.raises(ValueError, match=r"predict\.device"):
        check("predict", {"device": "gpu; rm -rf /"})


def test_result_settings_leave_out_scheduling():
    train = result_settings("train", defaults("train"), "train")
    assert "lr" in train and "augment" in train and "elastic_sigma" in train["augment"]
    assert not {"threads", "workers", "device", "checkpoint_every", "mem_mb"} & set(train)
    assert set(result_settings("predict", defaults("predict"), "predict")) == {
        "block",
        "dtype",
        "tta",
        "precision",
        "engine",
        "calibrate",
        "file_mb",
    }


def test_folds_hold_out_contiguous_slices_and_train_on_the_rest():
    folds = [Fold(i, 4) for i in range(4)]
    assert [f.held_out(20) for f in folds] == [(0, 5), (5, 10), (10, 15), (15, 20)]
    assert Fold(1, 4).training_ranges(20) == [(0, 5), (10, 20)]
    assert Fold(0, 3).training_ranges(3) == [(1, 3)]
    with pytest.raises(ValueError, match="at least 3 slices"):
        Fold(0, 3).held_out(2)
    with pytest.raises(ValueError):
        Fold(3, 3)


def test_experiment_holds_exactly_the_model_changing_settings():
    e = Experiment.from_dict({"name": "x", "model": {"base_width": 4, "levels": 3}, "train": {"tile": 36}})
    d = e.to_dict()
    assert "workers" not in d["train"] and "checkpoint_every" not in d["train"] and d["fold"] is None
    hard = Experiment.from_dict({"name": "x", "train": {"hard_tile_share": 0.5}})
    assert "workers" in hard.to_dict()["train"]  # hard tiles follow the losses: workers change the result
    inputs, outputs = e.tile_sizes
    assert outputs == (36, 36) and inputs[0] > 36
    with pytest.raises(ValueError, match="model"):
        Experiment.from_dict({"name": "x", "model": {"architecture": "unet3p", "padding": "valid"}})


def test_nested_command_line_strings_are_read_as_yaml_where_the_schema_takes_no_string():
    from unetflow.settings import typed_overrides

    given = {
        "results": "out",
        "train": {"iterations": "16", "lr": "1e-3", "optimizer": "adam", "augment": {"flip": "false"}},
        "predict": {"block": "[1, 64, 64]", "device": "cpu"},
        "segment": {"connectivity": "8", "dims": "null"},
        "experiments": {"e": {"train_on": ["a"], "folds": "3", "model": {"base_width": "8"}}},
        "datasets": {"a": {"images": "123.tif", "voxel_size": "[50, 4, 4]", "unit": "nanometer"}},
    }
    typed = typed_overrides(given)
    assert typed["train"] == {"iterations": 16, "lr": 0.001, "optimizer": "adam", "augment": {"flip": False}}
    assert typed["predict"] == {"block": [1, 64, 64], "device": "cpu"}
    assert typed["segment"] == {"connectivity": 8, "dims": None}
    assert typed["experiments"]["e"]["folds"] == 3 and typed["experiments"]["e"]["model"] == {"base_width": 8}
    assert typed["datasets"]["a"] == {"images": "123.tif", "voxel_size": [50, 4, 4], "unit": "nanometer"}
    assert given["train"]["iterations"] == "16"  # a new dict
    assert typed_overrides({"train": {"iterations": "many"}})["train"]["iterations"] == "many"  # left to validation
