"""Whole-process wall time of `bpexp train` (defaults) next to the seed's loop run the same way.

Both are timed as a user runs them, imports and all: a fresh Python process each time, in a
fresh temporary folder (so bpexp also creates its MLflow store), median of --repeats runs.
Usage: python benchmarks/train_wall.py [--repeats 5]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED_LOOP = Path(__file__).with_name("seed_loop.py")


def wall(cmd: list[str], fresh_dir: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        t = time.perf_counter()
        subprocess.run(cmd, cwd=tmp if fresh_dir else None, env=env, check=True, capture_output=True)
        return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    rows = {
        "seed loop (python seed_loop.py)": [sys.executable, str(SEED_LOOP)],
        "bpexp train (new MLflow store)": [sys.executable, "-m", "bpexp", "train"],
    }
    print(f"{'command':<34} {'median s':>9} {'min s':>7} {'max s':>7}   ({a.repeats} runs each)")
    for name, cmd in rows.items():
        times = [wall(cmd, fresh_dir=True) for _ in range(a.repeats)]
        print(f"{name:<34} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f}")
    # A second run in the same folder: the MLflow store exists already (the usual case).
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "bpexp", "train"]
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        print(f"{'bpexp train (existing store)':<34} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f}")


if __name__ == "__main__":
    main()
