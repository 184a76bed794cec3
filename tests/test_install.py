"""`make install` picks PyTorch's build for the machine: the CPU build where no NVIDIA driver is found (from
PyTorch's CPU index, where it is reachable), the default build where one is; and says which before installing."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _planned_install(path: str, tmp_path: Path) -> str:
    env = {**os.environ, "PATH": path}
    run = subprocess.run(
        ["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_cpu_machine_asks_for_the_cpu_build_and_a_gpu_machine_for_the_default(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sh", "make", "python3"):  # everything `make -n` needs, and no nvidia-smi
        (tools / tool).symlink_to(shutil.which(tool))
    cpu = _planned_install(str(tools), tmp_path)
    assert '[ -n "https://download.pytorch.org/whl/cpu" ]' in cpu
    assert '--extra-index-url "https://download.pytorch.org/whl/cpu"' in cpu
    assert "the CPU build from https://download.pytorch.org/whl/cpu (no NVIDIA driver found)" in cpu
    assert "https://download.pytorch.org/whl/cpu unreachable" in cpu  # and the fallback says why
    (tools / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (tools / "nvidia-smi").chmod(0o755)
    gpu = _planned_install(str(tools), tmp_path)
    assert '[ -n "" ]' in gpu and "from the default index (an NVIDIA driver found)" in gpu
    assert "import torch; print('Installed torch'" in gpu  # what was installed is said afterwards


def test_the_rules_conda_environment_has_every_package_the_pipeline_imports():
    """envs/unetflow.yaml (what `--sdm conda` builds) against pyproject's dependencies and the engines extra."""
    import re
    import tomllib

    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["engines"]
    conda_names = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
    names = {conda_names.get(n, n) for n in (re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in wanted)}
    env = yaml.safe_load((ROOT / "envs" / "unetflow.yaml").read_text())
    present = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in env["dependencies"] if isinstance(d, str)}
    assert names <= present, f"missing from envs/unetflow.yaml: {sorted(names - present)}"
