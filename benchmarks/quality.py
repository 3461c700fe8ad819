"""Does the study find a good configuration? Runs `bpexp sweep` (defaults plus any overrides)
in a temporary folder, then trains the best trial's config on 5 init seeds it was not tuned
on (train.seed + 0..4, the first `sweep.seeds` of which it was tuned on) and prints the
median final training MSE. The sweep issue's bar: <= 1.0e-3 for the default study.

Usage: python benchmarks/quality.py [hydra overrides for the sweep ...]
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

from collections import Counter

import optuna

from bpexp.training.data import make_dataset
from bpexp.results.outcome import verdict_of
from bpexp.training.population import Member, TrainSpec, train_population

BAR = 1.0e-3


def main() -> None:
    overrides = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bpexp", "sweep", "sweep.progress=false", *overrides], cwd=tmp,
                       env=env, check=True, capture_output=True)
        elapsed = time.perf_counter() - t
        study = optuna.load_study(study_name=next((o.split("=", 1)[1] for o in overrides
                                                   if o.startswith("sweep.study_name=")), "lr_hidden"),
                                  storage=f"sqlite:///{tmp}/outputs/optuna.db")
    best = study.best_trial
    lr, hidden = best.params["train.lr"], best.params["model.hidden"]
    epochs = next((int(o.split("=")[1]) for o in overrides if o.startswith("train.epochs=")), 5000)
    data = make_dataset("sin", -5, 5, 20)
    results = train_population([Member(hidden, "tanh", lr, 99 + s) for s in range(5)], data, TrainSpec(epochs))
    finals = [r.final_train_loss for r in results]
    med = statistics.median(finals)
    n = len(study.trials)
    verdicts = Counter(verdict_of(t) or "failed" for t in study.trials)
    print(f"sweep {' '.join(overrides) or '(defaults)'}: {n} trials in {elapsed:.1f} s")
    print("outcomes: " + ", ".join(f"{v} {k}" for k, v in verdicts.most_common())
          + f" ({verdicts['diverged'] / n:.0%} diverged, {verdicts['partly diverged'] / n:.0%} partly)")
    print(f"best trial #{best.number}: train.lr={lr:.4g} model.hidden={hidden} objective={best.value:.4g}")
    print("final MSE on seeds 99..103: " + ", ".join(f"{f:.3g}" for f in finals))
    print(f"median {med:.4g}  ->  {'PASS' if med <= BAR else 'FAIL'} (bar {BAR:g})")


if __name__ == "__main__":
    main()
