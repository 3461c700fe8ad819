"""TPE with a bounded history (sweep.tpe_history): what a draw costs, and what it finds.

    python benchmarks/tpe_history.py [--sizes 500 1000 2000 5000] [--history 1000] [--quality-trials 2000]

1. Cost: an in-memory study holding N finished trials of the default search space (train.lr
   log-uniform in [1e-3, 1], model.hidden 1-32; values from a smooth surrogate of the default
   study's landscape), then 20 trials drawn as bpexp draws them (multivariate TPE, constant
   liar), with sweep.tpe_history=H and with every trial (0): milliseconds a draw.
2. Search: the surrogate minimised for --quality-trials trials from 5 sampler seeds, with a
   bounded history (a small one, 250, so that it bounds most of the study) and with every
   trial: the best value found at a few budgets (median over the seeds).
The surrogate, not training: at thousands of trials the draw is what is measured, and a
training run per trial would take hours here.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import optuna

from bpexp.study.bounded_tpe import BoundedTPESampler
from bpexp.study.search_space import TPE_STARTUP_TRIALS

LR = optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)
HIDDEN = optuna.distributions.IntDistribution(1, 32)


def surrogate(lr: float, hidden: int) -> float:
    """A bowl in log lr around 0.27 that narrows with width, a floor that falls with width, and
    a cliff past the edge of stability (lr > 0.6): the shape of the default study's values."""
    if lr > 0.6:
        return 1.0
    return 7e-4 * (1 + 3 / hidden) + 0.05 * (math.log10(lr / 0.27)) ** 2 * (1 + hidden / 16)


def sampler(history: int, seed: int) -> BoundedTPESampler:
    return BoundedTPESampler(history=history, seed=seed, multivariate=True, constant_liar=True,
                             n_startup_trials=TPE_STARTUP_TRIALS)


def study_of(n: int, history: int, seed: int = 0) -> optuna.Study:
    rng = np.random.default_rng(seed)
    study = optuna.create_study(sampler=sampler(history, seed))
    lrs = np.exp(rng.uniform(math.log(1e-3), 0.0, n))
    hiddens = rng.integers(1, 33, n)
    study.add_trials([optuna.trial.create_trial(params={"train.lr": float(lr), "model.hidden": int(h)},
                                                distributions={"train.lr": LR, "model.hidden": HIDDEN},
                                                value=surrogate(lr, int(h))) for lr, h in zip(lrs, hiddens)])
    return study


def draw_ms(study: optuna.Study, k: int = 20) -> float:
    t = time.perf_counter()
    for _ in range(k):
        trial = study.ask()
        trial.suggest_float("train.lr", 1e-3, 1.0, log=True)
        trial.suggest_int("model.hidden", 1, 32)
        study.tell(trial, surrogate(trial.params["train.lr"], trial.params["model.hidden"]))
    return (time.perf_counter() - t) / k * 1000


def best_at(history: int, seed: int, n: int, budgets: list[int]) -> list[float]:
    study = optuna.create_study(sampler=sampler(history, seed))
    best, found = math.inf, []
    for i in range(1, n + 1):
        trial = study.ask()
        v = surrogate(trial.suggest_float("train.lr", 1e-3, 1.0, log=True), trial.suggest_int("model.hidden", 1, 32))
        study.tell(trial, v)
        best = min(best, v)
        if i in budgets:
            found.append(best)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000])
    p.add_argument("--history", type=int, default=1000)
    p.add_argument("--quality-trials", type=int, default=2000)
    a = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"ms a draw, study of N finished trials: tpe_history={a.history} | every trial")
    for n in a.sizes:
        print(f"  N={n:6d}: {draw_ms(study_of(n, a.history)):6.1f} | {draw_ms(study_of(n, 0)):6.1f}")
    budgets = [b for b in (250, 500, 1000, 2000, 5000) if b <= a.quality_trials]
    print(f"best surrogate value found (median of 5 sampler seeds) at {budgets} trials:")
    for history in (250, 0):
        t = time.perf_counter()
        runs = [best_at(history, seed, a.quality_trials, budgets) for seed in range(5)]
        med = [statistics.median(r[i] for r in runs) for i in range(len(budgets))]
        print(f"  tpe_history={history:4d}: " + ", ".join(f"{v:.6g}" for v in med) +
              f"  ({time.perf_counter() - t:.0f} s)")
    print(f"the surrogate's minimum on the grid: {min(surrogate(lr, h) for lr in np.geomspace(1e-3, 0.6, 4000) for h in range(1, 33)):.6g}")


if __name__ == "__main__":
    main()
