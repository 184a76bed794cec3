"""The prepared GPU check, rehearsed at toy size on the CPU: it runs every part and its report names every figure."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_smoke_run_reports_every_figure(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import FIGURES

    out = tmp_path / "gpu_check.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    record = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
    for figure in FIGURES:
        assert f"| {figure} |" in text and figure in record, figure
    assert set(record["seconds"]) == {"throughput", "isbi_training", "inference"}
    assert record["gpu"] == "none (CPU)" and math.isnan(record["predict_peak_gpu_memory_gib"])
    for figure in FIGURES[4:-1]:
        assert math.isfinite(record[figure]) and record[figure] >= 0, figure
    assert 0 <= record["isbi_val_rand_error"] <= 1 and record["predict_over_forward"] > 0
