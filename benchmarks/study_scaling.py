"""How a long study scales: seconds per 100 trials against the trial index, and its end.

    python benchmarks/study_scaling.py [--trials 1000] [--seeds 1] [--epochs 500] [--every 100] [key=value ...]

Runs `bpexp sweep sweep.n_trials=N sweep.seeds=S train.epochs=E` in a new folder, a new
process (what a user waits for), then reads from Optuna's storage when each trial was told:
- seconds per `--every` trials, in the order they were told (issue 13: flat; the last
  hundred within 1.5x of the second, the first holding the sequential start-up batches);
- the study's end: from the last trial told to the process's exit (summary, re-check,
  figures, best model; issue 13: <= 5 s at 1000 trials).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("overrides", nargs="*", help="more overrides, e.g. sweep.tpe_history=0")
    a = p.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tempfile.mkdtemp(prefix="bpexp-scaling-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    start = time.time()
    subprocess.run([sys.executable, "-m", "bpexp", "sweep", f"sweep.n_trials={a.trials}", f"sweep.seeds={a.seeds}",
                    f"train.epochs={a.epochs}", "sweep.progress=false", *a.overrides], cwd=folder, env=env, check=True,
                   capture_output=True)
    end = time.time()
    study = optuna.load_study(study_name="lr_hidden", storage=f"sqlite:///{folder}/outputs/optuna.db")
    # Optuna stores naive local times: read them back the same way
    told = sorted(t.datetime_complete.timestamp() for t in study.trials if t.datetime_complete)
    print(f"bpexp sweep, {a.trials} trials x {a.seeds} seed(s), {a.epochs} epochs {' '.join(a.overrides)}: "
          f"{end - start:.1f} s in all; "
          f"first trial told {told[0] - start:.1f} s after the start")
    print(f"trials   seconds per {a.every}")
    for i in range(a.every, len(told) + 1, a.every):
        print(f"{i:6d}   {told[i - 1] - told[i - a.every] if i > a.every else told[i - 1] - start:7.2f}")
    print(f"the study's end (last trial told -> process exit): {end - told[-1]:.2f} s")
    print(f"(outputs in {folder}; {datetime.now():%Y-%m-%d %H:%M})")


if __name__ == "__main__":
    main()
