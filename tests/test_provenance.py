"""Fingerprints: inputs by content, settings, and code versions that ignore docstrings and comments."""

import numpy as np
import pytest

from unetflow import provenance
from unetflow.provenance import ContentDigest, code_modules, code_version, input_fingerprint, make_record
from unetflow.store import create_image, set_attrs


def test_records_differ_exactly_when_inputs_settings_or_code_do():
    base = make_record({"a": "1"}, {"s": 1}, "c")
    assert base == make_record({"a": "1"}, {"s": 1}, "c")
    others = [make_record({"a": "2"}, {"s": 1}, "c"), make_record({"a": "1"}, {"s": 2}, "c")]
    others.append(make_record({"a": "1"}, {"s": 1}, "d"))
    assert len({r["fingerprint"] for r in [base, *others]}) == 4


def test_content_digest_sees_values_shape_and_dtype():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    digests = set()
    for array in (a, a.reshape(4, 3), a.astype(np.uint16), a + 1):
        d = ContentDigest()
        d.update(array)
        digests.add(d.hexdigest())
    assert len(digests) == 4


def test_input_fingerprint_of_stores_and_files(tmp_path):
    ours = tmp_path / "ours.ome.zarr"
    create_image(ours, (2, 4, 4), np.uint8, (1, 4, 4))
    set_attrs(ours, {"provenance": make_record({}, {"x": 1}, "c")})
    assert input_fingerprint(ours) == make_record({}, {"x": 1}, "c")["fingerprint"]
    foreign = tmp_path / "foreign.zarr"
    array = create_image(foreign, (2, 4, 4), np.uint8, (1, 4, 4))
    before = input_fingerprint(foreign)
    array[0] = 7  # a chunk written: the listing changes
    assert input_fingerprint(foreign) != before
    f = tmp_path / "model.pt"
    f.write_bytes(b"one")
    one = input_fingerprint(f)
    f.write_bytes(b"two")
    assert input_fingerprint(f) != one
    with pytest.raises(FileNotFoundError):
        input_fingerprint(tmp_path / "missing")


def test_code_version_follows_imports_and_ignores_docstrings_and_comments(tmp_path, monkeypatch):
    assert "unetflow.store" in code_modules("unetflow.stages.segment")
    assert "unetflow.training.trainer" not in code_modules("unetflow.stages.segment")
    assert "unetflow.training.trainer" in code_modules("unetflow.stages.train")
    package = tmp_path / "unetflow"
    (package / "stages").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "stages" / "__init__.py").write_text("")
    (package / "helper.py").write_text("X = 1\n")
    stage = package / "stages" / "demo.py"
    monkeypatch.setattr(provenance, "PACKAGE_DIR", package)

    def version(helper: str, text: str) -> str:
        (package / "helper.py").write_text(helper)
        stage.write_text(text)
        code_modules.cache_clear()
        code_version.cache_clear()
        return code_version("unetflow.stages.demo")

    first = version("X = 1\n", '"""Doc."""\nfrom unetflow.helper import X\n\n\ndef run():\n    return X\n')
    assert (
        version("X = 1  # note\n", '"""Other doc."""\nfrom unetflow.helper import X\n\n\ndef run():\n    return X\n')
        == first
    )
    assert version("X = 2\n", '"""Doc."""\nfrom unetflow.helper import X\n\n\ndef run():\n    return X\n') != first
    code_modules.cache_clear()
    code_version.cache_clear()
