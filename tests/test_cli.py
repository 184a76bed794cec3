import numpy as np
import tifffile

from unetflow.cli import main
from unetflow.store import open_image


def test_synth_ingest_weights_via_cli(tmp_path, capsys):
    assert (
        main(
            [
                "synth",
                "--out",
                str(tmp_path),
                "--train",
                "1",
                "32",
                "32",
                "--validation",
                "1",
                "32",
                "32",
                "--volume",
                "1",
                "32",
                "32",
            ]
        )
        == 0
    )
    assert (tmp_path / "train-labels.tif").exists()
    assert (
        main(
            [
                "ingest",
                str(tmp_path / "train-labels.tif"),
                str(tmp_path / "l.ome.zarr"),
                "--kind",
                "labels",
                "--voxel-size",
                "50",
                "4",
                "4",
            ]
        )
        == 0
    )
    assert main(["weights", str(tmp_path / "l.ome.zarr"), str(tmp_path / "w.ome.zarr")]) == 0
    assert open_image(tmp_path / "w.ome.zarr").array[:].min() > 0
    assert main(["ingest", str(tmp_path / "train-images.tif"), str(tmp_path / "i.ome.zarr")]) == 0
    args = [str(tmp_path / n) for n in ("i.ome.zarr", "l.ome.zarr", "w.ome.zarr", "fig.png")]
    assert main(["figure-weights", *args]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["figure-weights", *args[:3], str(tmp_path / "bad.png"), "--slice", "5"]) == 1
    assert "slice 5 out of range" in capsys.readouterr().err


def test_errors_name_the_input_and_exit_nonzero(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "bad.tif", np.array([[[3, 9]]], np.uint8))
    assert main(["ingest", str(tmp_path / "bad.tif"), str(tmp_path / "o.ome.zarr"), "--kind", "labels"]) == 1
    err = capsys.readouterr().err
    assert "unetflow ingest: error:" in err and "bad.tif" in err and "[3, 9]" in err
    assert not (tmp_path / "o.ome.zarr").exists()
    assert main(["predict", str(tmp_path / "none.pt"), str(tmp_path / "bad.tif"), str(tmp_path / "p")]) == 1
    assert "none.pt" in capsys.readouterr().err
