"""A one-node SLURM cluster on localhost for the tests: munge, slurmctld and slurmd from a config written into a
folder, stopped by their PID files (only the daemons this started).

Accounting: none (no slurmdbd, no database). Job states come from `squeue` while slurmctld remembers a job
(`MinJobAge`, 10 minutes here), and every finished job is written to a job-completion log (`jobcomp/filetxt`), which
the tests read to check that each job went through sbatch and how it ended. One test GPU (`gres/gpu`, on
/dev/null) lets a job ask for `--gpus=1` on a machine without one.

The config is also linked at SLURM's default path (`/etc/slurm/slurm.conf`) while the cluster runs: the executor
plugin starts each job's step with `srun` in an environment stripped of every `SLURM_*` variable, `SLURM_CONF`
included, so only the default path reaches it. A machine that already has a config there is left alone (the test
is skipped).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


def missing_tools() -> list[str]:
    """The programs a cluster needs that this machine lacks."""
    tools = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "srun", "scancel")
    return [t for t in tools if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalSlurm:
    """Start with `start()`, stop with `stop()`; `env` is the environment in which sbatch & co. reach it."""

    def __init__(self, root: Path, cpus: int, memory_mb: int) -> None:
        self.root, self.cpus, self.memory_mb = Path(root), cpus, memory_mb
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "jobcomp.log"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def pid_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"

    def write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=unetflowtest",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={r / 'munge' / 'munge.socket'}",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={self.pid_file('slurmctld')}",
                    f"SlurmdPidFile={self.pid_file('slurmd')}",
                    f"SlurmctldLogFile={r / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/filetxt",
                    f"JobCompLoc={self.jobcomp}",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU_Memory",
                    "SchedulerType=sched/backfill",
                    "GresTypes=gpu",
                    "MinJobAge=600",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "SwitchType=switch/none",
                    "SlurmdParameters=config_overrides",
                    "KillWait=10",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
                    "Gres=gpu:1 State=UNKNOWN",
                    f"PartitionName=cpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    f"PartitionName=gpu Nodes={self.node} MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        (r / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File=/dev/null\n")

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
            raise FileExistsError(f"{DEFAULT_CONF} exists: this machine has a SLURM config of its own")
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(self.conf)
        m = self.root / "munge"
        self._run(
            [
                _program("munged"),
                "--force",
                f"--key-file={m / 'munge.key'}",
                f"--socket={m / 'munge.socket'}",
                f"--pid-file={self.pid_file('munged')}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'seed'}",
            ]
        )
        self._run([_program("slurmctld"), "-f", str(self.conf)])
        self._run([_program("slurmd"), "-f", str(self.conf)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env)
            if out.returncode == 0 and out.stdout.strip() and all(s.startswith("idle") for s in out.stdout.split()):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster did not come up in {timeout} s:\n{self.logs()}")

    def _run(self, cmd: list[str]) -> None:
        run = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=60)
        if run.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({run.returncode}): {run.stderr[-2000:]}\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for log in ("slurmctld.log", "slurmd.log", "munge/munged.log"):
            path = self.root / log
            if path.exists():
                out.append(f"--- {log}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(out)

    def stop(self) -> None:
        """Stop the daemons this started (by their PID files), slurmd and slurmctld before munge, and unlink the
        default config if it is this cluster's."""
        if DEFAULT_CONF.is_symlink() and DEFAULT_CONF.resolve() == self.conf.resolve():
            DEFAULT_CONF.unlink()
        for daemon in reversed(DAEMONS):
            path = self.pid_file(daemon)
            if not path.exists():
                continue
            pid = int(path.read_text().strip() or 0)
            if pid <= 0:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)

    def completed_jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld finished, as the job-completion log records it (JobId, JobName, JobState,
        Partition, ExitCode, ...)."""
        if not self.jobcomp.exists():
            return []
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in self.jobcomp.read_text().splitlines() if line]
