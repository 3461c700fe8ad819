"""How good is `bpexp lr-find`'s suggestion? For a few widths and optimizers, compare it with
the best lr a sweep over train.lr alone finds (same width, same 5000-epoch training), and the
final training MSE each lr reaches (median over the sweep's 3 seeds).

Usage: python benchmarks/lr_find_vs_sweep.py [n_trials per sweep, default 40]
"""
import os
import re
import subprocess
import sys
import tempfile
import time

import optuna

CASES = [("4", "gd"), ("16", "gd"), ("4", "momentum"), ("4", "adam"), ("16", "adam")]


def bpexp(args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    r = subprocess.run([sys.executable, "-m", "bpexp", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    return r.stdout


def main() -> None:
    n_trials = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    print(f"{'hidden':>6} {'optimizer':>9} {'lr-find':>9} {'blow-up':>9} {'sweep best':>10} "
          f"{'MSE@lr-find':>11} {'MSE@best':>9} {'lr-find s':>9} {'sweep s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for hidden, opt in CASES:
            common = [f"model.hidden={hidden}", f"train.optimizer={opt}"]
            t = time.perf_counter()
            out = bpexp(["lr-find", *common], tmp)
            t_find = time.perf_counter() - t
            suggested = float(re.search(r"suggested train.lr = (\S+)", out).group(1))
            blow = re.search(r"blows up from lr (\S+)", out)
            name = f"lr-{hidden}-{opt}"
            t = time.perf_counter()
            bpexp(["sweep", *common, "~sweep.search_space.hidden", f"sweep.study_name={name}",
                   f"sweep.n_trials={n_trials}", "sweep.progress=false", "tracking.log_plots=false"], tmp)
            t_sweep = time.perf_counter() - t
            study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp}/outputs/optuna.db")
            best_lr = study.best_params["train.lr"]
            # the study's own objective at the suggestion: a one-trial study with lr fixed there
            at = f"at-{name}"
            bpexp(["sweep", *common, f"train.lr={suggested}", "~sweep.search_space.hidden", "~sweep.search_space.lr",
                   f"+sweep.search_space.at={{key: train.lr, type: categorical, choices: [{suggested}]}}",
                   f"sweep.study_name={at}", "sweep.n_trials=1", "sweep.progress=false", "tracking.log_plots=false"],
                  tmp)
            try:
                at_value = optuna.load_study(study_name=at, storage=f"sqlite:///{tmp}/outputs/optuna.db").best_value
            except ValueError:  # the suggestion diverged: no value
                at_value = float("nan")
            print(f"{hidden:>6} {opt:>9} {suggested:>9.4g} {blow.group(1) if blow else '-':>9} {best_lr:>10.4g} "
                  f"{at_value:>11.3g} {study.best_value:>9.3g} {t_find:>9.1f} {t_sweep:>8.1f}")


if __name__ == "__main__":
    main()
