"""How many trials does a study need, and does its recommendation hold on fresh seeds?

Runs the default study through the product's own loop (bpexp/study/session.py: the Session
`bpexp sweep` runs, in memory and without MLflow), for each sampler and sampler seed; then
reads, at budgets 20, 30, 50 and 100 trials:

- trials to target: the first trial at which the best value so far is within 1.5x of the
  dense grid's best (median of the study's seeds);
- the recommendation retrained on 5 fresh init seeds (1000-1004), as the median final MSE,
  against the grid's best on the same fresh seeds: the best trial's (sweep.recheck=0), and
  the re-check's (the top sweep.recheck trials retrained on fresh seeds 200-204, the best
  median there recommended; what `bpexp sweep` does at its end).

The grid: 31 lrs log-spaced in [1e-4, 1] x widths 1, 2, 4, 8, 16, 32, 5000 epochs.

    python benchmarks/sample_efficiency.py [key=value ...] [--seeds 5] [--samplers tpe random gp cmaes]

Overrides (before the options) apply to every study, e.g. sweep.batch_size=4.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np
import optuna
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from bpexp.config.schema import SweepAppConfig, register_schemas
from bpexp.config.validation import validate_sweep
from bpexp.training.data import dataset_from_config
from bpexp.training.population import TrainSpec, train_population
from bpexp.study.recheck import recheck_seeds, recommend
from bpexp.config.specs import member_of
from bpexp.study.search_space import make_sampler, study_seeds, trial_config
from bpexp.study import lr_units
from bpexp.study.session import Session

FRESH = list(range(1000, 1005))  # the seeds recommendations are judged on: never tuned on, nor re-checked on
BUDGETS = (20, 30, 50, 100)


def config(overrides: list[str]) -> SweepAppConfig:
    register_schemas()
    with initialize_config_module("bpexp.conf", version_base="1.3"):
        cfg = OmegaConf.to_object(compose("sweep", overrides=["sweep.progress=false", *overrides]))
    validate_sweep(cfg)  # as bpexp sweep does: the search space's entries become ParamSpecs
    return cfg


def run_study(cfg: SweepAppConfig, data) -> optuna.Study:
    """The study as `bpexp sweep` runs it (bpexp/study/session.py: the same Session, the same
    batches, asks and tells), in memory and without MLflow."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler(cfg.sweep), direction="minimize")
    tested: dict = {}
    lr_units.test_every_config(cfg, data, tested)  # as the sweep does before its first batch
    Session(cfg, study, data, tested=tested).run()
    return study


def fresh_mse(cfg: SweepAppConfig, configs: list, data, cache: dict) -> list[float]:
    """Median final training MSE over the FRESH seeds of each config (one population)."""
    todo = [c for c in configs if key(c) not in cache]
    members = [replace(member_of(c), seed=s) for c in todo for s in FRESH]
    results = train_population(members, data, TrainSpec(cfg.train.epochs, diverge_above=cfg.train.diverge_above)) if todo else []
    for i, c in enumerate(todo):
        runs = results[i * len(FRESH):(i + 1) * len(FRESH)]
        cache[key(c)] = statistics.median(r.final_train_loss if r.status == "finished" else np.inf for r in runs)
    return [cache[key(c)] for c in configs]


def key(c) -> tuple:
    return (float(c.train.lr), str(c.model.hidden), str(c.model.activation))


def grid_best(cfg: SweepAppConfig, data) -> tuple[float, float, tuple]:
    """(best median MSE over the study's seeds, best median MSE over the fresh seeds, its config)."""
    lrs, widths = np.logspace(-4, 0, 31), [1, 2, 4, 8, 16, 32]
    base = member_of(cfg)
    own = study_seeds(cfg.train.seed, cfg.sweep.seeds)
    members = [replace(base, lr=float(lr), hidden=w, seed=s) for lr in lrs for w in widths for s in own + FRESH]
    results = train_population(members, data, TrainSpec(cfg.train.epochs, diverge_above=cfg.train.diverge_above))
    n = len(own) + len(FRESH)
    best_study, best_fresh, where = np.inf, np.inf, None
    for i in range(0, len(results), n):
        loss = [r.final_train_loss if r.status == "finished" else np.inf for r in results[i:i + n]]
        best_study = min(best_study, statistics.median(loss[:len(own)]))
        fresh = statistics.median(loss[len(own):])
        if fresh < best_fresh:
            best_fresh, where = fresh, (results[i].member.lr, results[i].member.hidden)
    return best_study, best_fresh, where


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="sampler seeds 0, 1, ...")
    p.add_argument("--samplers", nargs="+", default=["tpe", "random", "gp", "cmaes"])
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    base = config(["sweep.n_trials=100", *a.overrides])
    data = dataset_from_config(base.data)
    t0 = time.perf_counter()
    target_study, target_fresh, where = grid_best(base, data)
    print(f"grid: best median MSE {target_study:.3g} on the study's seeds; on the fresh seeds {target_fresh:.3g} "
          f"at lr {where[0]:.3g}, {where[1]} hidden ({time.perf_counter() - t0:.0f} s)")
    cache: dict = {}
    print("| sampler | trials to 1.5x grid best (median, range) | "
          + " | ".join(f"{b} trials: best trial / re-check, fresh MSE / grid's" for b in BUDGETS) + " | time |")
    print("|---|---|" + "---|" * len(BUDGETS) + "---|")
    for sampler in a.samplers:
        reach, ratios, took = [], {b: ([], []) for b in BUDGETS}, []
        for seed in range(a.seeds):
            cfg = config(["sweep.n_trials=100", f"sweep.sampler={sampler}", f"sweep.sampler_seed={seed}", *a.overrides])
            t = time.perf_counter()
            study = run_study(cfg, data)
            took.append(time.perf_counter() - t)
            values = [tr.value if tr.value is not None else np.inf for tr in study.trials]
            best_so_far = np.minimum.accumulate(values)
            hit = np.flatnonzero(best_so_far <= 1.5 * target_study)
            reach.append(int(hit[0]) + 1 if len(hit) else np.inf)
            for b in BUDGETS:
                first = study.trials[:b]
                done = [tr for tr in first if tr.value is not None]
                best = min(done, key=lambda tr: tr.value)
                picked = recommend(cfg, done, data, recheck_seeds(cfg))
                got = fresh_mse(cfg, [trial_config(cfg, best.params), trial_config(cfg, picked.params)], data, cache)
                ratios[b][0].append(got[0] / target_fresh)
                ratios[b][1].append(got[1] / target_fresh)
        med = lambda v: statistics.median(v)  # noqa: E731
        cells = [f"{med(ratios[b][0]):.2f}x / {med(ratios[b][1]):.2f}x" for b in BUDGETS]
        print(f"| {sampler} | {med(reach):.0f} ({min(reach):.0f}-{max(reach):.0f}) | " + " | ".join(cells)
              + f" | {med(took):.0f} s |", flush=True)


if __name__ == "__main__":
    main()
