"""Population training against the stack a user would otherwise write, in one run.

(a) the seed's loop, one 5000-epoch run;
(b) Optuna TPE + optuna_integration's MLflowCallback over the seed's loop
    (train.lr log [1e-4, 1], model.hidden [1, 32]);
(c) `bpexp sweep`, same space, one seed per trial, full recording, end to end (a new process);
(d) the population trainer alone (no Optuna, no recording), the same number of trials;
(e) peak memory of a 1000-member population (hidden 32).
Each part runs in a process of its own, so its peak memory (max RSS) is its own. Prints
seconds per trial, the ratios and peak memory, and writes them to a CSV.

Usage: python benchmarks/population.py [--trials 100] [--peer-trials 20] [--csv outputs/benchmark_population.csv]
(b) is timed over --peer-trials trials (about 0.8 s each) and reported per trial.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def part_a(n: int) -> float:
    sys.path.insert(0, str(HERE))
    from seed_loop import train

    t = time.perf_counter()
    train()
    return time.perf_counter() - t


LR_RANGE, HIDDEN_RANGE = (1e-4, 1.0), (1, 32)  # the peer's search space (log lr, linear width)


def peer_objective(trial) -> float:
    """The objective a user would write around the seed's loop: one seed (99), its last loss."""
    sys.path.insert(0, str(HERE))
    from seed_loop import train

    lr = trial.suggest_float("lr", *LR_RANGE, log=True)
    hidden = trial.suggest_int("hidden", *HIDDEN_RANGE)
    losses, _ = train(hidden=hidden, lr=lr)
    return losses[-1] if losses[-1] == losses[-1] else 1e5  # NaN -> a bad value


def part_b(n: int) -> float:
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        callback = MLflowCallback(tracking_uri=f"sqlite:///{tmp}/mlflow.db", metric_name="train_loss")
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
        t = time.perf_counter()
        study.optimize(peer_objective, n_trials=n, callbacks=[callback])
        return time.perf_counter() - t


def part_c(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bpexp", "sweep", f"sweep.n_trials={n}", "sweep.seeds=1",
                        "sweep.progress=false"], cwd=tmp, env=env, check=True, capture_output=True)
        return time.perf_counter() - t


def _members(n: int, hidden: int | None = None):
    import numpy as np

    from bpexp.training.population import Member

    rng = np.random.default_rng(0)
    return [Member(hidden or int(rng.integers(1, 33)), "tanh", float(10 ** rng.uniform(-4, 0)), 99 + i)
            for i in range(n)]


def part_d(n: int) -> float:
    from bpexp.training.data import make_dataset
    from bpexp.training.population import TrainSpec, train_population

    data = make_dataset("sin", -5, 5, 20)
    members = _members(n)
    t = time.perf_counter()
    train_population(members, data, TrainSpec(5000))
    return time.perf_counter() - t


def part_e(n: int) -> float:
    from bpexp.training.data import make_dataset
    from bpexp.training.population import TrainSpec, train_population

    data = make_dataset("sin", -5, 5, 20)
    t = time.perf_counter()
    train_population(_members(1000, hidden=32), data, TrainSpec(200))
    return time.perf_counter() - t


PARTS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d, "e": part_e}


def run_part(name: str, n: int) -> dict:
    """Run one part in a fresh process; its peak RSS includes the processes it started."""
    out = subprocess.run([sys.executable, __file__, "--part", name, "--n", str(n)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--peer-trials", type=int, default=20)
    p.add_argument("--csv", default="outputs/benchmark_population.csv")
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.part:  # child process: time one part, report seconds and peak memory
        seconds = PARTS[a.part](a.n)
        rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print(json.dumps({"seconds": seconds, "peak_rss_mb": rss / 1024}))
        return
    rows = [
        ("a", "seed loop, one run", 1),
        ("b", "Optuna TPE + MLflowCallback over the seed loop", a.peer_trials),
        ("c", "bpexp sweep, 1 seed/trial, full recording (whole process)", a.trials),
        ("d", "population trainer alone", a.trials),
    ]
    results = []
    for key, what, n in rows:
        r = run_part(key, n)
        results.append({"part": key, "what": what, "trials": n, "seconds": round(r["seconds"], 3),
                        "s_per_trial": round(r["seconds"] / n, 4), "peak_rss_mb": round(r["peak_rss_mb"], 1)})
    e = run_part("e", 1000)
    results.append({"part": "e", "what": "1000-member population (hidden 32), 200 epochs", "trials": 1000,
                    "seconds": round(e["seconds"], 3), "s_per_trial": "", "peak_rss_mb": round(e["peak_rss_mb"], 1)})
    per = {r["part"]: r["s_per_trial"] for r in results if r["s_per_trial"] != ""}
    print(f"{'part':<5}{'what':<60}{'trials':>7}{'seconds':>10}{'s/trial':>10}{'peak MB':>9}")
    for r in results:
        spt = f"{r['s_per_trial']:.4f}" if r["s_per_trial"] != "" else ""
        print(f"({r['part']})  {r['what']:<60}{r['trials']:>7}{r['seconds']:>10.2f}{spt:>10}{r['peak_rss_mb']:>9.0f}")
    print(f"ratios per trial: (b)/(c) = {per['b'] / per['c']:.1f}x   (b)/(d) = {per['b'] / per['d']:.0f}x   "
          f"(a)/(d) = {per['a'] / per['d']:.0f}x")
    Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(a.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    print(f"written: {a.csv}")


if __name__ == "__main__":
    main()
