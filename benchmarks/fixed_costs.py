"""What a short command waits for (issue 27, goal 4: <= 3 s), whole processes from a shell.

    python benchmarks/fixed_costs.py [--repeats 5] [--code OTHER_CHECKOUT ...]

In a new folder it makes a finished 4-trial study and a train run, then times, `--repeats`
times each, interleaved so that the machine's drift hits every variant alike:
`bpexp train` into a new store and into an existing one, `bpexp compare`, `bpexp reproduce`
of an unknown id and of the train run, a rerun of the finished study ("nothing to do"), and a
new 2-trial study from start to summary.
With --code, the same commands run with each checkout's bpexp first on PYTHONPATH (e.g. a
`git worktree` of an earlier commit), side by side with this one. Prints medians (and min-max).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
STUDY = ["sweep.n_trials=4", "sweep.seeds=1", "train.epochs=500", "sweep.recheck_seeds=2", "sweep.progress=false"]


def bpexp(code: Path, cwd: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(code)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "bpexp", *args], cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t, r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--code", nargs="*", default=[], help="other checkouts to time side by side")
    a = p.parse_args()
    codes = [HERE, *(Path(c).resolve() for c in a.code)]
    work = Path(tempfile.mkdtemp(prefix="bpexp-fixed-"))
    times: dict[tuple[str, str], list[float]] = {}
    try:
        folders = {}  # checkout -> (its folder, its train run's id)
        for i, code in enumerate(codes):  # each checkout reads a study and a run it made itself
            f = work / f"code{i}"
            f.mkdir()
            _, r = bpexp(code, f, "sweep", *STUDY)
            assert r.returncode == 0, r.stderr[-2000:]
            _, r = bpexp(code, f, "train", "train.epochs=100")
            assert r.returncode == 0, r.stderr[-2000:]
            run_id = re.search(r"MLflow run (\w{32})", r.stdout)[1]
            folders[code] = (f, run_id)
        cases = {
            "train, a new store (100 epochs)": lambda f, run: ("train", "train.epochs=100", "tracking.uri=sqlite:///" + str(f / "new" / "mlflow.db")),
            "train, the existing store (100 epochs)": lambda f, run: ("train", "train.epochs=100"),
            "compare": lambda f, run: ("compare",),
            "reproduce an unknown id": lambda f, run: ("reproduce", "0" * 32),
            "reproduce the train run": lambda f, run: ("reproduce", run),
            "rerun the finished study": lambda f, run: ("sweep", *STUDY),
            "a new 2-trial study (150 epochs, 1 seed)": lambda f, run: (
                "sweep", "sweep.n_trials=2", "sweep.seeds=1", "train.epochs=150", "sweep.progress=false",
                "tracking.log_plots=false", "tracking.log_model=false", "sweep.storage=sqlite:///" + str(f / "new" / "optuna.db"),
                "tracking.uri=sqlite:///" + str(f / "new" / "mlflow.db")),
        }
        for _ in range(a.repeats):
            for name, args in cases.items():
                for code in codes:
                    f, run = folders[code]
                    shutil.rmtree(f / "new", ignore_errors=True)
                    s, r = bpexp(code, f, *args(f, run))
                    assert r.returncode in (0, 2), (name, r.stderr[-2000:])
                    times.setdefault((name, str(code)), []).append(s)
        print(f"{a.repeats} repeats each, median (min-max) seconds; {os.cpu_count()} CPUs")
        print(f"{'command':42s}" + "".join(f"{str(c)[-28:]:>30s}" for c in codes))
        for name in cases:
            row = [times[name, str(c)] for c in codes]
            print(f"{name:42s}" + "".join(f"{statistics.median(t):>14.2f} ({min(t):.2f}-{max(t):.2f})" for t in row))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
