"""Bytes per trial: what a study leaves in its MLflow store (issue 27, goal 5).

    python benchmarks/store_bytes.py [--trials 100] [--read OUTPUTS_DIR] [key=value ...]

Runs `bpexp sweep sweep.n_trials=N` (the default study, overrides added) in a new folder, or
reads a study's outputs/ folder already there (--read: e.g. one recorded by another commit),
and prints mlflow.db's size and its metric rows, the artifacts' bytes by file name (mean per
run that holds it), and the total per trial (the parent's files and models included, spread
over the trials, as a user's disk sees it).
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def measure(outputs: Path) -> None:
    db = outputs / "mlflow.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        runs = c.execute("SELECT count(*) FROM runs").fetchone()[0]
        rows = c.execute("SELECT count(*) FROM metrics").fetchone()[0]
        children = c.execute("SELECT count(*) FROM tags WHERE key = 'mlflow.parentRunId'").fetchone()[0]
    trials = children or runs
    by_name: dict[str, list[int]] = defaultdict(list)
    for path in (outputs / "mlartifacts").rglob("*"):
        if path.is_file():
            by_name[str(path).split("/artifacts/", 1)[-1]].append(path.stat().st_size)
    artifacts = sum(sum(v) for v in by_name.values())
    size = db.stat().st_size
    print(f"{trials} trials ({runs} runs); mlflow.db {size / 1e6:.1f} MB, {rows} metric rows "
          f"({rows / trials:.0f} a trial); artifacts {artifacts / 1e6:.1f} MB")
    for name, sizes in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:10]:
        print(f"  {name:32s} {len(sizes):5d} files, {sum(sizes) / len(sizes) / 1e3:8.1f} KB each")
    print(f"per trial: mlflow.db {size / trials / 1e3:.0f} KB + artifacts {artifacts / trials / 1e3:.0f} KB "
          f"= {(size + artifacts) / trials / 1e3:.0f} KB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--read", type=Path, help="a study's outputs/ folder to measure instead of running one")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    if a.read:
        measure(a.read)
        return
    with tempfile.TemporaryDirectory() as folder:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bpexp", "sweep", f"sweep.n_trials={a.trials}", "sweep.progress=false",
                        *a.overrides], cwd=folder, env=env, check=True, capture_output=True)
        print(f"bpexp sweep sweep.n_trials={a.trials} {' '.join(a.overrides)}: {time.perf_counter() - t:.1f} s")
        measure(Path(folder) / "outputs")


if __name__ == "__main__":
    main()
