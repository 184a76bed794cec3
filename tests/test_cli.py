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
                "--out",
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
    assert main(["weights", str(tmp_path / "l.ome.zarr"), "--out", str(tmp_path / "w.ome.zarr")]) == 0
    assert open_image(tmp_path / "w.ome.zarr").array[:].min() > 0
    assert main(["ingest", str(tmp_path / "train-images.tif"), "--out", str(tmp_path / "i.ome.zarr")]) == 0
    args = [str(tmp_path / n) for n in ("i.ome.zarr", "l.ome.zarr", "w.ome.zarr")]
    assert main(["figure-weights", *args, "--out", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["figure-weights", *args, "--out", str(tmp_path / "bad.png"), "--slice", "5"]) == 1
    assert "slice 5 out of range" in capsys.readouterr().err


def test_errors_name_the_input_and_exit_nonzero(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "bad.tif", np.array([[[3, 9]]], np.uint8))
    assert main(["ingest", str(tmp_path / "bad.tif"), "--out", str(tmp_path / "o.ome.zarr"), "--kind", "labels"]) == 1
    err = capsys.readouterr().err
    assert "unetflow ingest: error:" in err and "bad.tif" in err and "[3, 9]" in err
    assert not (tmp_path / "o.ome.zarr").exists()
    assert main(["predict", str(tmp_path / "none.pt"), str(tmp_path / "bad.tif"), "--out", str(tmp_path / "p")]) == 1
    assert "none.pt" in capsys.readouterr().err


def test_every_subcommand_explains_itself_with_one_output_convention():
    """A description per subcommand, help for every argument, defaults shown (from the schema), output --out."""
    import argparse

    from unetflow.cli import build_parser
    from unetflow.settings import defaults

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(commands.choices) == 14
    for name, sub in commands.choices.items():
        assert sub.description and len(sub.description) > 20, name
        actions = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        for action in actions:
            assert action.help, f"{name} {action.dest}: no help"
        (out,) = [a for a in actions if a.dest == "out"]
        assert out.option_strings == ["--out"] and out.required, name
        formatter = sub._get_formatter()
        for action in actions:
            shown = action.option_strings and action.default not in (None, False, [], {}) and action.dest != "shard"
            if shown:
                assert "%(default)s" in formatter._get_help_string(action), (name, action.dest)
    predict = commands.choices["predict"]
    assert predict.get_default("scheduler") == defaults("predict")["scheduler"]
    assert "(default: threads)" in " ".join(predict.format_help().split())
