import copy
import csv
import signal
import threading

import numpy as np
import pytest
import torch

from unetflow.augment import AugmentParams
from unetflow.models.checkpoint import load_checkpoint, load_model
from unetflow.stages.weights import WeightParams, compute_weights
from unetflow.training import trainer as train_module
from unetflow.training.data import TileSampler, load_slices, load_validation
from unetflow.training.sampling import TileDifficulty
from unetflow.training.settings import TrainSettings
from unetflow.training.trainer import Interrupted, train

MODEL = {"base_width": 4, "levels": 3}


def settings(**kw):
    base = {
        "iterations": 6,
        "tile": 20,
        "optimizer": "adam",
        "lr": 1e-3,
        "validate_every": 3,
        "checkpoint_every": 2,
        "workers": 0,
    }
    return TrainSettings.from_dict({**base, **kw})


@pytest.fixture(scope="module")
def data(ingested, tmp_path_factory):
    images, labels = ingested
    weights = compute_weights(labels, tmp_path_factory.mktemp("w") / "w.ome.zarr", WeightParams())
    return (
        load_slices([str(images)], [str(labels)], [str(weights)]),
        load_validation([str(images)], [str(labels)]),
    )


def test_training_writes_model_and_log(data, tmp_path):
    slices, validation = data
    model_path = train(MODEL, settings(), slices, validation, tmp_path, "cpu", 1, {"fingerprint": "run"})
    model, payload = load_model(model_path)
    assert payload["model"]["base_width"] == 4
    with open(tmp_path / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [3, 6]
    for r in rows:
        assert 0 <= float(r["val_pixel_error"]) <= 1 and 0 <= float(r["val_rand_error"]) <= 1
        assert np.isfinite(float(r["loss"]))
    assert payload["best"]["iteration"] in (3, 6)


@pytest.mark.parametrize("extra", [{}, {"ema": 0.9}, {"hard_tile_share": 0.5}])
def test_killed_run_resumes_to_the_same_result(data, tmp_path, monkeypatch, extra):
    slices, validation = data
    full = train(MODEL, settings(**extra), slices, validation, tmp_path / "full", "cpu", 1, {"fingerprint": "r"})

    calls = {"n": 0}
    real_loss = train_module.segmentation_loss

    def dies_at_fifth_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # a kill between checkpoints
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "segmentation_loss", dies_at_fifth_step)
    with pytest.raises(KeyboardInterrupt):
        train(MODEL, settings(**extra), slices, validation, tmp_path / "resumed", "cpu", 1, {"fingerprint": "r"})
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["iteration"] == 4
    assert not (tmp_path / "resumed" / "model.pt").exists()
    monkeypatch.setattr(train_module, "segmentation_loss", real_loss)
    resumed = train(MODEL, settings(**extra), slices, validation, tmp_path / "resumed", "cpu", 1, {"fingerprint": "r"})

    a, b = load_checkpoint(full), load_checkpoint(resumed)
    assert a["iteration"] == b["iteration"]
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0)
    last = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert last["iteration"] == 6
    reference = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    if "ema" in extra:  # the weight average resumes too, whichever model validation kept
        assert last["average"]["updates"] == reference["average"]["updates"] == 6
        for k, v in reference["average"]["state_dict"].items():
            torch.testing.assert_close(last["average"]["state_dict"][k], v, rtol=0, atol=0)
    if "hard_tile_share" in extra:  # so does the running loss that places hard tiles
        grids = reference["difficulty"]["grids"]
        assert any(np.isfinite(np.asarray(g)).any() for g in grids)
        for a, b in zip(last["difficulty"]["grids"], grids, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sigterm_checkpoints_then_resumes(data, tmp_path, monkeypatch):
    slices, _ = data
    full = train(MODEL, settings(), slices, [], tmp_path / "full", "cpu", 1, {"fingerprint": "s"})
    calls = {"n": 0}
    real_loss = train_module.segmentation_loss

    def preempted_at_third_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            # what SLURM sends before preemption, to the main thread: a process-directed signal may land on a
            # thread of a native library another test started in this process (OpenVINO's pool), where it crashed
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "segmentation_loss", preempted_at_third_step)
    with pytest.raises(Interrupted, match="iteration 3"):
        train(MODEL, settings(), slices, [], tmp_path / "pre", "cpu", 1, {"fingerprint": "s"})
    assert load_checkpoint(tmp_path / "pre" / "checkpoints" / "last.pt")["iteration"] == 3
    monkeypatch.setattr(train_module, "segmentation_loss", real_loss)
    resumed = train(MODEL, settings(), slices, [], tmp_path / "pre", "cpu", 1, {"fingerprint": "s"})
    a, b = load_checkpoint(full), load_checkpoint(resumed)
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0)


def test_weight_average_is_validated_and_kept(data, tmp_path, monkeypatch):
    slices, validation = data
    with pytest.raises(ValueError, match="train.ema"):
        settings(ema=1.0)
    validated = []
    real_validate = train_module.validate

    def recording(model, *args, **kwargs):
        validated.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_validate(model, *args, **kwargs)

    monkeypatch.setattr(train_module, "validate", recording)
    model_path = train(
        MODEL, settings(ema=0.9, validate_every=6), slices, validation, tmp_path, "cpu", 1, {"fingerprint": "e"}
    )
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    kept = load_checkpoint(model_path)["state_dict"]
    assert last["average"]["updates"] == 6
    for k, v in kept.items():
        torch.testing.assert_close(v, last["average"]["state_dict"][k], rtol=0, atol=0)
        torch.testing.assert_close(v, validated[-1][k], rtol=0, atol=0)
    raw = last["state_dict"]
    assert any(not torch.equal(kept[k], raw[k]) for k in raw)  # the average, not the last weights
    plain = train(
        MODEL, settings(validate_every=6), slices, validation, tmp_path / "plain", "cpu", 1, {"fingerprint": "e"}
    )
    assert load_checkpoint(plain)["state_dict"].keys() == kept.keys()
    assert load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["average"] is None


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_select_last_keeps_the_final_model_whatever_validation_says(data, tmp_path, monkeypatch, ema):
    slices, validation = data
    errors = iter([0.1, 0.9])  # the first validation is the best: `select: best` would keep iteration 3
    real_validate = train_module.validate

    def scripted(*args, **kwargs):
        pixel, _ = real_validate(*args, **kwargs)
        return pixel, next(errors)

    monkeypatch.setattr(train_module, "validate", scripted)
    model_path = train(
        MODEL, settings(select="last", ema=ema), slices, validation, tmp_path, "cpu", 1, {"fingerprint": "s"}
    )
    payload, last = load_checkpoint(model_path), load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    final = last["average"]["state_dict"] if ema else last["state_dict"]
    for k, v in payload["state_dict"].items():
        torch.testing.assert_close(v, final[k], rtol=0, atol=0)
    assert payload["iteration"] == 6 and payload["best"]["iteration"] == 6 and payload["best"]["rand_error"] == 0.9
    assert not (tmp_path / "checkpoints" / "best.pt").exists()

    errors = iter([0.1, 0.9])
    best = train(MODEL, settings(ema=ema), slices, validation, tmp_path / "best", "cpu", 1, {"fingerprint": "s"})
    assert load_checkpoint(best)["iteration"] == 3 and load_checkpoint(best)["best"]["rand_error"] == 0.1
    with pytest.raises(ValueError, match="train.select"):
        settings(select="smoothest")


def test_checkpoint_of_another_run_is_not_resumed(data, tmp_path):
    slices, validation = data
    train(MODEL, settings(iterations=2), slices, [], tmp_path, "cpu", 1, {"fingerprint": "first"})
    train(MODEL, settings(iterations=3), slices, [], tmp_path, "cpu", 1, {"fingerprint": "second"})
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["provenance"]["fingerprint"] == "second"
    assert load_checkpoint(tmp_path / "model.pt")["iteration"] == 3


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="optimizer"):
        settings(optimizer="rmsprop")
    with pytest.raises(ValueError, match="iters"):
        TrainSettings.from_dict({"iters": 3})
    with pytest.raises(ValueError, match="train.cldice_weight"):
        settings(cldice_weight=-1.0)
    with pytest.raises(ValueError, match="train.hard_pixel_fraction"):
        settings(hard_pixel_fraction=1.5)
    with pytest.raises(ValueError, match="train.hard_tile_share"):
        settings(hard_tile_share=-0.1)
    with pytest.raises(ValueError, match="train.hard_tile_top"):
        settings(hard_tile_top=0.0)


def test_schedules_and_logged_speed(data, tmp_path):
    from unetflow.training.trainer import lr_factor

    assert lr_factor("none", 5, 10) == 1.0
    assert lr_factor("poly", 0, 10) == 1.0 and lr_factor("poly", 10, 10) == 0.0
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    slices, _ = data
    train(
        MODEL,
        settings(schedule="poly", iterations=4, validate_every=2),
        slices,
        [],
        tmp_path,
        "cpu",
        1,
        {"fingerprint": "p"},
    )
    with open(tmp_path / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["lr"]) == pytest.approx(1e-3 * (1 - 2 / 4) ** 0.9)
    assert all(0 <= float(r["data_wait_share"]) <= 1 and float(r["iterations_per_second"]) > 0 for r in rows)
    with pytest.raises(ValueError, match="schedule"):
        settings(schedule="step")


def test_anisotropic_3d_training(ingested, tmp_path):
    images, labels = ingested
    data3d = load_slices([str(images)], [str(labels)], None, dims=3)
    assert data3d.images[0].ndim == 3
    model = {"base_width": 2, "levels": 2, "dims": 3, "pool": [1, 2, 2]}
    path = train(
        model,
        settings(iterations=2, tile=8, validate_every=2),
        data3d,
        load_validation([str(images)], [str(labels)]),
        tmp_path,
        "cpu",
        1,
        {"fingerprint": "3d"},
    )
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))  # noqa: SIM115
    assert 0 <= float(rows[-1]["val_rand_error"]) <= 1
    assert load_checkpoint(path)["model"]["pool"] == [1, 2, 2]
    with pytest.raises(ValueError, match="3D model needs 3D"):
        train(model, settings(iterations=1), load_slices([str(images)], [str(labels)], None), [], tmp_path, "cpu")


def test_bf16_training_runs_and_keeps_the_training_layout(data, tmp_path, monkeypatch):
    slices, validation = data
    with pytest.raises(ValueError, match="train.precision"):
        settings(precision="fp16")
    seen = []
    real_loss = train_module.segmentation_loss

    def recording(kind, logits, *args):
        seen.append((logits.dtype, logits.is_contiguous()))
        return real_loss(kind, logits, *args)

    monkeypatch.setattr(train_module, "segmentation_loss", recording)
    model_path = train(MODEL, settings(precision="bf16"), slices, validation, tmp_path, "cpu", 1, {"fingerprint": "b"})
    # validation (after step 3) runs in channels_last; training steps after it are contiguous again on CPU
    assert seen == [(torch.bfloat16, True)] * 6
    model, payload = load_model(model_path)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: weights stay fp32
    assert payload["best"] is not None
    reference = train(
        MODEL, settings(precision="fp32"), slices, validation, tmp_path / "fp32", "cpu", 1, {"fingerprint": "b"}
    )
    a, b = load_model(model_path)[0], load_model(reference)[0]
    assert not torch.equal(next(a.parameters()), next(b.parameters()))  # bf16 really ran


def test_slice_context_training_reads_neighbours_within_the_stack(ingested, tmp_path):
    images, labels = ingested
    plain = load_slices([str(images)], [str(labels)], None)
    stacked = load_slices([str(images)], [str(labels)], None, slice_context=1)
    n = len(plain.images)
    assert n >= 3 and len(stacked.images) == n and stacked.images[0].shape == (3, *plain.images[0].shape)
    for z, neighbours in ((0, (1, 0, 1)), (1, (0, 1, 2)), (n - 1, (n - 2, n - 1, n - 2))):
        for channel, source in enumerate(neighbours):
            np.testing.assert_array_equal(stacked.images[z][channel], plain.images[source])
    fixed = AugmentParams(flip=False, rotate=False, elastic_sigma=0, contrast=0, brightness=0)
    sampler = TileSampler(stacked, (24, 24), (8, 8), fixed, 0, 4)
    image, target, weight = sampler[0]
    assert image.shape == (3, 24, 24) and target.shape == (8, 8) and weight.shape == (8, 8)

    model = {**MODEL, "slice_context": 1}
    validation = load_validation([str(images)], [str(labels)])
    path = train(
        model, settings(iterations=2, validate_every=2), stacked, validation, tmp_path, "cpu", 1, {"fingerprint": "s"}
    )
    assert load_model(path)[0].config.slice_context == 1
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))  # noqa: SIM115
    assert 0 <= float(rows[-1]["val_rand_error"]) <= 1
    with pytest.raises(ValueError, match="slice_context"):
        train(model, settings(iterations=1), plain, [], tmp_path / "mismatch", "cpu", 1)


def test_validation_labels_without_a_recorded_convention_are_refused(ingested):
    images, _ = ingested
    with pytest.raises(ValueError, match="no label convention recorded"):
        load_validation([str(images)], [str(images)])  # an image store given as labels


def test_loss_settings_reach_the_loss(data, tmp_path, monkeypatch):
    seen = []
    real = train_module.segmentation_loss

    def spy(*args):
        seen.append(args[4:])
        return real(*args)

    monkeypatch.setattr(train_module, "segmentation_loss", spy)
    slices, validation = data
    s = settings(iterations=2, validate_every=2, hard_pixel_fraction=0.3, cldice_weight=0.5, cldice_iterations=2)
    train(MODEL, s, slices, validation, tmp_path, "cpu", 1, {"fingerprint": "hard"})
    assert seen == [(0.5, 2, 0.3)] * 2
    with open(tmp_path / "train_log.csv") as f:
        assert np.isfinite(float(next(csv.DictReader(f))["loss"]))


def test_hard_tiles_are_placed_by_the_losses_of_earlier_steps(data, tmp_path, monkeypatch):
    slices, _ = data
    seen = []
    real = TileDifficulty.draw

    def counting_draw(self, rng, top):
        seen.append(sum(int(np.isfinite(g).sum()) for g in self.grids))
        return real(self, rng, top)

    monkeypatch.setattr(TileDifficulty, "draw", counting_draw)
    train(MODEL, settings(hard_tile_share=1.0, iterations=4), slices, [], tmp_path, "cpu", 1, {"fingerprint": "h"})
    assert len(seen) == 4  # every tile placed by the running loss
    assert seen[0] == 0 and 0 < seen[1] <= seen[2] <= seen[3]  # each after the previous step's loss was recorded


def test_hard_tiles_reach_dataloader_workers(data, tmp_path):
    slices, _ = data
    path = train(
        MODEL,
        settings(hard_tile_share=0.5, iterations=3, workers=1),
        slices,
        [],
        tmp_path,
        "cpu",
        1,
        {"fingerprint": "w"},
    )
    grids = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["difficulty"]["grids"]
    assert load_checkpoint(path)["iteration"] == 3 and any(np.isfinite(np.asarray(g)).any() for g in grids)


@pytest.mark.parametrize(("value", "missing"), [(255, "membrane"), (0, "cell")])
def test_labels_without_membrane_or_cell_are_refused_for_training(ingested, tmp_path, value, missing):
    import tifffile

    from unetflow.stages.ingest import ingest
    from unetflow.store import open_image

    images, _ = ingested
    shape = open_image(images).shape
    tifffile.imwrite(tmp_path / "flat.tif", np.full(shape, value, np.uint8), photometric="minisblack")
    labels = ingest(tmp_path / "flat.tif", tmp_path / "flat.ome.zarr", "labels", chunks=(1, 64, 64))
    with pytest.raises(ValueError, match=rf"flat\.ome\.zarr: the training slices hold no {missing} pixel"):
        load_slices([str(images)], [str(labels)], None)


def test_a_non_finite_loss_names_its_cause(data, tmp_path, monkeypatch):
    slices, validation = data
    real_loss = train_module.segmentation_loss
    monkeypatch.setattr(train_module, "segmentation_loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    with pytest.raises(
        FloatingPointError, match="at iteration 1: the inputs were finite, so the optimization diverged"
    ):
        train(MODEL, settings(), slices, validation, tmp_path, "cpu", 1)
    broken = copy.deepcopy(slices)
    for w in broken.weights:
        w[...] = np.inf
    monkeypatch.setattr(train_module, "segmentation_loss", real_loss)
    with pytest.raises(FloatingPointError, match="weights hold NaN or infinite values"):
        train(MODEL, settings(), broken, validation, tmp_path / "inf", "cpu", 1)
