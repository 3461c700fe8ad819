"""What recording costs: bpexp's whole study against the floor MLflow's own client sets.

    python benchmarks/recording.py [--trials 100] [--seeds 1] [--floor-runs 50] [--peer-trials 10]

1. `bpexp sweep sweep.n_trials=N sweep.seeds=S` end to end, a new process in a new folder:
   wall seconds (what a user waits for, imports and the store's creation included), and the
   CPU seconds of each of its processes (the main one: Optuna, training; the recorder: every
   MLflow write), read from /proc every 0.1 s: which of the two sets the pace.
2. The floor: one of that study's child runs, read back (params, tags, every metric row,
   every file), written again `--floor-runs` times through MlflowClient into a new sqlite
   store the way MLflow's client does it best: create_run with its tags, one log_batch, one
   log_artifacts, set_terminated. Milliseconds per run; N x that is the study's floor.
3. Optuna + optuna_integration's MLflowCallback over the seed's loop (benchmarks/population.py
   part b), seconds per trial: the peer a user would otherwise write.
Prints the figures and their ratios (issue 13's targets: wall <= 1.5 x floor for 1 seed,
<= 2 x for the default 3 seeds; >= 10x faster per trial than the peer).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent


def study_wall(folder: str, trials: int, seeds: int) -> tuple[float, dict[str, float]]:
    """The study's wall seconds, and CPU seconds by process ("main", "recorder", "other")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    t = time.perf_counter()
    study = subprocess.Popen([sys.executable, "-m", "bpexp", "sweep", f"sweep.n_trials={trials}",
                              f"sweep.seeds={seeds}", "sweep.progress=false"], cwd=folder, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cpu: dict[int, tuple[str, float]] = {}
    while study.poll() is None:
        for pid, (role, seconds) in process_cpu(study.pid).items():
            cpu[pid] = (role or cpu.get(pid, ("other", 0.0))[0], seconds)
        time.sleep(0.1)
    wall = time.perf_counter() - t
    if study.returncode:
        raise SystemExit(f"bpexp sweep failed: {study.stderr.read().strip()}")
    by_role: dict[str, float] = {}
    for role, seconds in cpu.values():
        by_role[role] = by_role.get(role, 0.0) + seconds
    return wall, by_role


def process_cpu(root: int) -> dict[int, tuple[Optional[str], float]]:
    """pid -> (role, user + system CPU seconds so far) for root and its descendants (Linux /proc);
    role None: unknown now (a process that has exited and not yet been reaped shows no command line)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parents[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += [child for child, parent in parents.items() if parent == pid]
    out = {}
    for pid in tree:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile: its last reading stays
        # The recorder is a spawned multiprocessing worker ("spawn_main" in its command line);
        # the resource tracker and git's helpers are "other".
        role = "main" if pid == root else None if not cmd else "recorder" if b"spawn_main" in cmd else "other"
        out[pid] = (role, (int(fields[11]) + int(fields[12])) / tick)
    return out


def child_content(folder: str):
    """(params, tags, metrics, files) of the study's first finished child run, as recorded."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder}/outputs/mlflow.db")
    exp = client.get_experiment_by_name("bpexp").experiment_id
    run = client.search_runs([exp], "tags.`optuna.trial_number` = '0'")[0]
    metrics = [Metric(m.key, m.value, m.timestamp, m.step)
               for key in run.data.metrics for m in client.get_metric_history(run.info.run_id, key)]
    files = Path(client.download_artifacts(run.info.run_id, "", tempfile.mkdtemp()))
    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"}
    return run.data.params, tags, metrics, files


def floor_ms(content, runs: int) -> float:
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    params, tags, metrics, files = content
    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.create_experiment("floor", artifact_location=Path(tmp, "art").as_uri())
        parent = client.create_run(exp).info.run_id
        t = time.perf_counter()
        for _ in range(runs):
            run_id = client.create_run(exp, tags={**tags, "mlflow.parentRunId": parent}).info.run_id
            client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                             tags=[RunTag(k, v) for k, v in tags.items()])
            client.log_artifacts(run_id, str(files))
            client.set_terminated(run_id, "FINISHED")
        return (time.perf_counter() - t) / runs * 1000


def peer_s(trials: int) -> float:
    sys.path.insert(0, str(HERE))
    from population import part_b

    return part_b(trials) / trials


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--floor-runs", type=int, default=50)
    p.add_argument("--peer-trials", type=int, default=10)
    a = p.parse_args()
    from bpexp.recording.tracking import configure_mlflow

    configure_mlflow()
    with tempfile.TemporaryDirectory() as folder:
        wall, cpu = study_wall(folder, a.trials, a.seeds)
        content = child_content(folder)
    floor = floor_ms(content, a.floor_runs)
    params, tags, metrics, files = content
    n_files = sum(1 for f in files.rglob("*") if f.is_file())
    print(f"a child run: {len(params)} params, {len(tags)} tags, {len(metrics)} metric rows, {n_files} files")
    print(f"floor (MlflowClient, {a.floor_runs} runs): {floor:.1f} ms a run; x {a.trials} trials = "
          f"{floor * a.trials / 1000:.2f} s")
    print(f"bpexp sweep, {a.trials} trials x {a.seeds} seed(s), whole process: {wall:.2f} s = "
          f"{wall / (floor * a.trials / 1000):.2f} x the floor; {wall / a.trials * 1000:.0f} ms a trial")
    print("  CPU seconds: " + ", ".join(f"{role} {seconds:.1f}" for role, seconds in sorted(cpu.items()))
          + f" (the recorder's: {cpu.get('recorder', 0) / (floor * a.trials / 1000):.2f} x the floor)")
    if a.peer_trials:
        peer = peer_s(a.peer_trials)
        print(f"Optuna + MLflowCallback over the seed loop: {peer * 1000:.0f} ms a trial "
              f"({peer / (wall / a.trials):.1f} x bpexp's)")
