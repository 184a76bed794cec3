import numpy as np
import pytest

from unetflow.labels import BINARY_01, BINARY_255, INSTANCES, LabelSurvey, instance_labels, survey


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 255], BINARY_255),
        ([255], BINARY_255),
        ([0], BINARY_255),
        ([0, 1], BINARY_01),
    ],
)
def test_binary_conventions_are_recognized(values, expected):
    assert survey(np.array(values, np.uint16)).convention() == expected


@pytest.mark.parametrize("values", [[0, 1, 2, 7], list(range(40)), list(range(0, 256, 3))])
def test_other_values_need_a_declaration(values):
    """Instance ids and a grayscale image given as labels look alike: without a declaration both are refused."""
    labels = np.array(values, np.uint16)
    with pytest.raises(ValueError, match=r"label_convention: instances"):
        survey(labels).convention("labels.tif")
    assert survey(labels).convention("labels.tif", INSTANCES) == INSTANCES


def test_a_declared_binary_convention_is_checked():
    assert survey(np.array([0, 1], np.uint8)).convention("l.tif", BINARY_01) == BINARY_01
    with pytest.raises(ValueError, match=r"declared binary01 .* \[0, 255\]"):
        survey(np.array([0, 255], np.uint8)).convention("l.tif", BINARY_01)


def test_survey_accumulates_over_chunks():
    s = LabelSurvey()
    s.add(np.array([0, 255], np.uint8))
    s.add(np.array([0, 3], np.uint8))
    assert s.convention("l.tif", INSTANCES) == INSTANCES
    with pytest.raises(ValueError, match=r"\[0, 3, 255\]"):
        s.convention("l.tif")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([0.5, 1.0]), "non-integer"),
        (np.array([-1, 0, 3]), "minimum -1"),
        (np.array([128, 255], np.uint8), r"\[128, 255\]"),
    ],
)
def test_bad_labels_name_the_values(values, message):
    with pytest.raises(ValueError, match=message):
        survey(values).convention("labels.tif")


def test_instances_from_binary_are_4_connected():
    labels = np.array([[255, 0, 255], [0, 255, 0], [255, 0, 255]], np.uint8)
    assert instance_labels(labels, BINARY_255, 4).max() == 5
    assert instance_labels(labels, BINARY_255, 8).max() == 1
    with pytest.raises(ValueError, match="connectivity"):
        instance_labels(labels, BINARY_255, 6)


def test_recorded_convention_names_the_store():
    from unetflow.labels import recorded_convention

    assert recorded_convention({"label_convention": "binary01"}, "a.zarr") == "binary01"
    with pytest.raises(ValueError, match=r"a\.zarr: no label convention recorded; run `unetflow ingest --kind labels`"):
        recorded_convention({}, "a.zarr")
    with pytest.raises(ValueError, match=r"b\.zarr: unknown label convention 'rgb'"):
        recorded_convention({"label_convention": "rgb"}, "b.zarr")
