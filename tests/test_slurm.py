"""The pipeline through a real SLURM cluster (one node on localhost, see `slurm_cluster`), with the workflow's SLURM
profile as a user runs it: every job through sbatch, CPU jobs in the CPU partition and training in the GPU one,
sharded prediction, and a training job preempted by SIGTERM that resumes from its checkpoint. Outputs must equal
those of a local run of the same config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, TINY, planned_jobs, snakemake
from slurm_cluster import DEFAULT_CONF, LocalSlurm, missing_tools

from unetflow.models.checkpoint import load_checkpoint
from unetflow.store import open_image

pytestmark = [pytest.mark.integration, pytest.mark.slurm]
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
RUN_TIMEOUT = 1500  # seconds: a hanging status query fails the test, not CI
# Long enough (a few seconds) to be stopped between checkpoints.
CONFIG = {
    **TINY,
    "train": {**TINY["train"], "iterations": 2000, "checkpoint_every": 50, "validate_every": 500, "gpus": 1},
    "predict": {**TINY["predict"], "shards": 3},
}
VOLUMES = ("tiny_validation", "tiny_volume")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_tools()
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing; `make test` installs it as root)")
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs munge and slurm as root; run as root (as CI does)")
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        pytest.skip(f"{DEFAULT_CONF} exists: not starting a test cluster on a machine with a SLURM config")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    c = LocalSlurm(tmp_path_factory.mktemp("slurm"), os.cpu_count() or 1, int(memory * 0.8))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _slurm_run(work: Path, cluster: LocalSlurm) -> subprocess.Popen:
    env = {**cluster.env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--workflow-profile",
        str(PROFILE),
        "--configfile",
        "config.yaml",
        "--slurm-init-seconds-before-status-checks",
        "2",  # a test, not a cluster's scheduler under load
        "--latency-wait",
        "5",
    ]
    log = (work / "snakemake.log").open("w")
    return subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def _preempt_training(work: Path, cluster: LocalSlurm, done: dict) -> None:
    """Send SIGTERM to the running training job once it has saved a checkpoint, as a preempting scheduler does."""
    last = work / "results" / "models" / "tiny" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and not done.get("stop"):
        queue = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True, env=cluster.env
        ).stdout.split("\n")
        running = [line.split()[0] for line in queue if "rule_train" in line]
        if running and last.exists():
            subprocess.run(["scancel", "--signal=TERM", "--full", running[0]], env=cluster.env, check=True)
            done["preempted"] = running[0]
            return
        time.sleep(0.2)


def _jobs_by_rule(work: Path) -> dict[str, list[str]]:
    """SLURM job ids per rule or group, from the SLURM logs the profile keeps (`rule_<name>/.../<jobid>.log`,
    `group_<name>/...`)."""
    out: dict[str, list[str]] = {}
    for log in (work / ".snakemake" / "slurm_logs").rglob("*.log"):
        top = log.relative_to(work / ".snakemake" / "slurm_logs").parts[0]
        out.setdefault(top.split("_", 1)[1], []).append(log.stem.split("_")[0])
    return out


def test_the_pipeline_runs_through_slurm_with_preemption_and_equals_a_local_run(cluster, tmp_path):
    local, work = tmp_path / "local", tmp_path / "slurm"
    for d in (local, work):
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    plan = planned_jobs(snakemake(work, "--configfile", "config.yaml", "-n", "--quiet", "rules").stdout)
    assert plan["predict_shard"] == 2 * 3 and plan["train"] == 1

    watcher_state: dict = {}
    run = _slurm_run(work, cluster)
    watcher = threading.Thread(target=_preempt_training, args=(work, cluster, watcher_state), daemon=True)
    watcher.start()
    reference = snakemake(local, "--configfile", "config.yaml")  # meanwhile, on the machine itself
    assert reference.returncode == 0, reference.stderr[-3000:]
    try:
        code = run.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        run.kill()
        subprocess.run(["scancel", "--full", "-u", "root"], env=cluster.env)
        pytest.fail(f"the SLURM run did not finish in {RUN_TIMEOUT} s:\n{(work / 'snakemake.log').read_text()[-4000:]}")
    finally:
        watcher_state["stop"] = True
    log = (work / "snakemake.log").read_text()
    assert code == 0, log[-4000:] + cluster.logs()

    # Every job went through sbatch and finished there; the preempted training job was retried.
    by_rule = _jobs_by_rule(work)
    groups = yaml.safe_load((PROFILE / "config.yaml").read_text())["groups"]  # rules run together, one job per group
    expected = {rule: n for rule, n in plan.items() if rule not in {"all", "train", *groups}}
    assert {rule: len(by_rule.get(rule, [])) for rule in expected} == expected
    group_jobs = [name for name in by_rule if name.startswith(tuple(set(groups.values())))]
    assert set(by_rule) == {*expected, "train", *group_jobs}
    for rule in groups:  # each grouped job ran inside a group job (listed indented under it in the log)
        assert len(re.findall(rf"^    rule {rule}:$", log, re.MULTILINE)) == plan[rule], rule
    assert sum(len(by_rule[g]) for g in group_jobs) < sum(plan[rule] for rule in groups)
    assert log.count("has been submitted with SLURM jobid") == sum(map(len, by_rule.values()))
    assert "preempted" in watcher_state, "the training job was never seen running with a checkpoint"
    assert watcher_state["preempted"] in by_rule["train"] and len(by_rule["train"]) == 2
    finished = {job["JobId"]: job for job in cluster.completed_jobs()}
    for rule, ids in by_rule.items():
        for jobid in ids:
            job = finished[jobid]
            want = {"FAILED", "CANCELLED"} if jobid == watcher_state["preempted"] else {"COMPLETED"}
            assert job["JobState"] in want, (rule, job)
            assert job["Partition"] == ("gpu" if rule == "train" else "cpu"), (rule, job)
    resumed = re.search(
        r"resuming \S+ at iteration (\d+)", (work / "results" / "logs" / "train" / "tiny.log").read_text()
    )
    assert resumed and int(resumed[1]) >= CONFIG["train"]["checkpoint_every"]

    # The same results as the local run, the resumed model included.
    a = load_checkpoint(local / "results" / "models" / "tiny" / "model.pt")
    b = load_checkpoint(work / "results" / "models" / "tiny" / "model.pt")
    assert a["iteration"] == b["iteration"] == CONFIG["train"]["iterations"]
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0)
    for v in VOLUMES:
        for kind in ("probabilities", "segmentation"):
            x = open_image(local / "results" / "tiny" / v / f"{kind}.ome.zarr").array[:]
            y = open_image(work / "results" / "tiny" / v / f"{kind}.ome.zarr").array[:]
            np.testing.assert_array_equal(x, y, err_msg=f"{v} {kind}")
    for csv in ("metrics.csv", "summary.csv"):
        assert (local / "results" / "report" / csv).read_text() == (work / "results" / "report" / csv).read_text()
    assert re.search(r"\d+ of \d+ steps \(100%\) done", log)
    shutil.rmtree(work / ".snakemake", ignore_errors=True)
