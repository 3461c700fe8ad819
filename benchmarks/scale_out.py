"""Trials per second with 1, 2, 4 workers on one study in PostgreSQL, recording to an MLflow
tracking server; and the CPU the servers spend per trial, to see where they would saturate.

Needs the servers running (docs/scale-out.md shows how; .ci/run starts the same ones):
    python benchmarks/scale_out.py --pg postgresql://u:pw@127.0.0.1:5432/optuna \
        --mlflow http://127.0.0.1:5055 [--workers 1 2 4] [--trials 24] [--epochs 2000] \
        [--launcher hand|local|ray [--ray-address 127.0.0.1:6379]] [--sqlite]
--launcher hand: N `bpexp sweep` started side by side (each ends the study: re-check and all);
local / ray: one `bpexp sweep launcher=... launcher.workers=N` (the study ended once).
--sqlite (local or hand only): the study and runs in sqlite files under a temporary folder.
Server CPU is read from /proc for every process named `postgres` and every process whose
command line holds `mlflow server` (gunicorn/uvicorn workers included): run it on the
machine that hosts the servers.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(match) -> float:
    """utime + stime of the processes whose command line `match` accepts."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if match(cmd):
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def is_postgres(cmd: str) -> bool:
    return cmd.startswith("postgres") or "/postgres " in cmd


def is_mlflow_server(cmd: str) -> bool:
    return "mlflow server" in cmd or "mlflow.server" in cmd


def run(workers: int, a) -> dict:
    study, exp = f"bench-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    stores = [] if a.sqlite else [f"sweep.storage={a.pg}", f"tracking.uri={a.mlflow}"]
    cmd = [sys.executable, "-m", "bpexp", "sweep", f"sweep.n_trials={a.trials}", "sweep.seeds=1",
           "sweep.progress=false", f"train.epochs={a.epochs}", *stores,
           f"sweep.study_name={study}", f"tracking.experiment={exp}"]
    if a.launcher != "hand":
        cmd += [f"launcher={a.launcher}", f"launcher.workers={workers}"]
        cmd += [f"launcher.address={a.ray_address}"] if a.ray_address else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    pg0, ml0 = cpu_seconds(is_postgres), cpu_seconds(is_mlflow_server)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(workers if a.launcher == "hand" else 1)]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(p.stderr.read().decode()[-2000:])
    wall = time.perf_counter() - t
    return {"workers": workers, "wall": wall, "trials_per_s": a.trials / wall,
            "pg_cpu_per_trial": (cpu_seconds(is_postgres) - pg0) / a.trials,
            "mlflow_cpu_per_trial": (cpu_seconds(is_mlflow_server) - ml0) / a.trials}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pg", required=True)
    p.add_argument("--mlflow", required=True)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--launcher", choices=["hand", "local", "ray"], default="hand")
    p.add_argument("--ray-address", default=None)
    p.add_argument("--sqlite", action="store_true")
    a = p.parse_args()
    print(f"{a.trials} trials x 1 seed x {a.epochs} epochs, full recording, on {os.cpu_count()} cores; "
          f"launcher {a.launcher}, {'sqlite' if a.sqlite else 'PostgreSQL + MLflow server'}")
    print(f"{'workers':>7} {'wall s':>8} {'trials/s':>9} {'PG cpu s/trial':>15} {'MLflow cpu s/trial':>19}")
    rows = [run(n, a) for n in a.workers]
    for r in rows:
        print(f"{r['workers']:>7} {r['wall']:>8.1f} {r['trials_per_s']:>9.2f} {r['pg_cpu_per_trial']:>15.4f} "
              f"{r['mlflow_cpu_per_trial']:>19.4f}")
    pg = max(r["pg_cpu_per_trial"] for r in rows)
    ml = max(r["mlflow_cpu_per_trial"] for r in rows)
    print(f"ceiling per server core: PostgreSQL ~{1 / pg:.0f} trials/s, MLflow server ~{1 / ml:.0f} trials/s "
          "(1 / CPU seconds per trial)")


if __name__ == "__main__":
    main()
