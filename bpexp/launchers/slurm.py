"""launcher=slurm: the workers as one Slurm job array, through Slurm's own commands.

`sbatch` submits a script (written beside the logs, without a password: the job inherits
$PGPASSWORD and the rest of spec.env from sbatch's environment, `--export=ALL`). The array is
`--requeue`: a preempted task gets SIGTERM (bpexp settles and exits 143), goes back to the
queue, and its rerun resumes the same study, as any worker does. `squeue` says whether a task
still runs or waits; `scontrol show job` gives each task's exit code. submitit would do the
same through pickled callables; a worker is a command line, so sbatch is all it takes.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

from bpexp.config.schema import ConfigError, LauncherConfig
from bpexp.launchers.workers import LaunchError, Workers, WorkerSpec, first_line

CALL_S = 30.0  # the longest a Slurm command may take to answer (a busy controller is slow, not silent)


def check_slurm() -> None:
    if shutil.which("sbatch") is None:
        raise ConfigError("launcher", "slurm", "no `sbatch` on this machine's PATH: launch from a Slurm login node")


def script(cfg: LauncherConfig, spec: WorkerSpec, n: int) -> str:
    options = [f"--job-name={spec.name}", f"--array=0-{n - 1}", f"--cpus-per-task={spec.cpus}", "--requeue",
               "--export=ALL",  # the environment sbatch is run with (spec.env): no password in this file
               f"--output={spec.logs}/worker-%a.log", "--open-mode=append", f"--chdir={spec.cwd}"]
    options += [f"--partition={cfg.partition}"] * bool(cfg.partition) + [f"--time={cfg.time}"] * bool(cfg.time)
    options += list(cfg.sbatch_args)
    lines = ["#!/bin/bash", "# A bpexp study's workers (bpexp/launchers/slurm.py): each task a `bpexp sweep`"]
    lines += [f"#SBATCH {o}" for o in options]
    lines += ["export BPEXP_WORKER_INDEX=$SLURM_ARRAY_TASK_ID", "exec " + shlex.join(spec.command())]
    return "\n".join(lines) + "\n"


def _call(*argv: str, env=None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=CALL_S, env=env)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"`{argv[0]}` did not answer in {CALL_S:.0f} s (is slurmctld up?)") from None


class SlurmWorkers(Workers):
    def __init__(self, cfg: LauncherConfig, spec: WorkerSpec, n: int):
        spec.logs.mkdir(parents=True, exist_ok=True)
        path = spec.logs / "workers.sbatch"
        path.write_text(script(cfg, spec, n))
        r = _call("sbatch", "--parsable", str(path), env={**os.environ, **spec.env})
        if r.returncode != 0:
            raise LaunchError(f"sbatch refused the job array: {first_line(r.stderr)}")
        self.n, self.job, self.dropped = n, r.stdout.strip().split(";")[0], False
        self.where = f"Slurm job array {self.job} ({n} tasks; script and logs: {spec.logs})"

    def running(self) -> bool:
        r = _call("squeue", "--noheader", "--array", "--jobs", self.job, "--format=%T")
        if r.returncode != 0:  # the job left squeue's memory: nothing of it runs
            return "Invalid job id" not in r.stderr and bool(r.stdout.strip())
        return bool(r.stdout.strip())

    def failures(self) -> list[str]:
        r = _call("scontrol", "show", "job", self.job)
        fine = {"COMPLETED", "CANCELLED"} if self.dropped else {"COMPLETED"}  # cancelled by drop_waiting: not a failure
        found = []
        for block in r.stdout.split("\n\n"):
            task = re.search(r"ArrayTaskId=(\d+)", block)
            state = re.search(r"JobState=(\S+)", block)
            code = re.search(r"ExitCode=(\d+):(\d+)", block)
            if task and state and state.group(1) not in fine:
                why = f"exit {code.group(1)}" if code and code.group(1) != "0" else state.group(1).lower()
                found.append(f"task {task.group(1)}: {why}")
        return found

    def drop_waiting(self) -> None:
        self.dropped = True
        _call("scancel", "--state=PENDING", self.job)

    def cancel(self) -> None:
        _call("scancel", "--signal=TERM", "--full", self.job)  # each task settles, as on Ctrl-C
