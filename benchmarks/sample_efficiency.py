"""How many trials does a study need, and does its recommendation hold on seeds nobody tuned on?

Runs the default study through the product's own loop (bpexp/study/session.py: the Session
`bpexp sweep` runs, in memory and without MLflow), for each sampler and sampler seed; then,
at budgets 20, 30, 50 and 100 trials, takes the recommendation as `bpexp sweep` makes it (the
re-check: the top sweep.recheck trials on their seeds and sweep.recheck_seeds fresh ones, its
best sweep.recheck_final on sweep.recheck_final_seeds more,
bpexp/study/recheck.py; with the trials the study's end tries next to the best ones,
bpexp/study/neighbours.py) and trains it on 32 UNSEEN init seeds that neither the study nor the
re-check ever uses: each sampler seed's own (sampler seed k: 10000 + 32k .. 10000 + 32k + 31), so
that the failures counted over all sampler seeds are of distinct seeds (with --shared-unseen,
every recommendation on 10000-10031, as before 2026-12-03: one seed of those, 10003, sticks every
4-unit network at lr 0.226-0.258, and counted a failure for each such recommendation). It reports, per budget (the median over sampler seeds):

- the recommendation's median MSE over the unseen seeds, as a ratio to the grid's best
  config judged by the same risk measure (fewest failed seeds, then the lowest mean: the
  oracle, picked on the unseen seeds themselves);
- its worst unseen seed (as a ratio too) and its failure rate (diverged or stuck seeds over
  all studies' recommendations: results/outcome.py's definitions);
- the same for four other rules read off the same re-check (the finalists over all their
  seeds, the others over the first round's), to argue the choice: the old
  rule (issue 15: the best worst seed over 3 fresh seeds only), the median over all seeds, and
  "q90": the fewest failed seeds, then the lowest 90th percentile (where bpexp takes the mean);
  and "width below" (fails_below: an experiment, not kept in the product).

With two samplers or more, the first is set against each other sampler seed by sampler seed (the
recommendations of sampler seed k are judged on the same unseen seeds): per budget, on how many
each is better by the product's measure (fewer failed unseen seeds, then the lower median), and
a sign test over the seeds where they differ.

--reference LR HIDDEN: a config no study is needed for (the best known: 5 units at lr 0.211,
judged by the risk measure on 1280 seeds, docs/findings.md "Rare failures"), judged on each
sampler seed's unseen seeds as the recommendations are: its row is the ceiling the samplers'
rows are read against (the same for every budget), and each sampler is set against it, paired.

The grid: 41 lrs log-spaced in [1e-3, 1] x widths 1-8, 12, 16, 24, 32, 5000 epochs.

    python benchmarks/sample_efficiency.py [key=value ...] [--seeds 10] [--samplers tpe random] [--told mean]
                                           [--reference 0.211 5]

Overrides (before the options) apply to every study, e.g. sweep.recheck_seeds=16.
"""
from __future__ import annotations

import argparse
import math
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
from bpexp.training.data import constant_loss
from bpexp.training.population import train_population
from bpexp.results.outcome import NOT_FIT, Outcome, recheck_rank, trial_outcome
from bpexp.study.recheck import and_neighbours, best_of, candidates, ranking, rechecked, top_trials
from bpexp.config.specs import member_of, train_spec
from bpexp.study.search_space import make_sampler, trial_config
from bpexp.study import lr_units
from bpexp.study.neighbours import train_neighbours
from bpexp.study.session import Session
from bpexp.names import NEIGHBOUR_OF

UNSEEN = list(range(10_000, 10_032))  # the grid's seeds (and, --shared-unseen, every recommendation's): never tuned on, nor re-checked on


def unseen_seeds(sampler_seed: int, shared: bool) -> list[int]:
    """The 32 unseen seeds the recommendations of a sampler seed's study are judged on."""
    return UNSEEN if shared else [s + len(UNSEEN) * sampler_seed for s in UNSEEN]
BUDGETS = (20, 30, 50, 100)
RULES = ("bpexp", "worst of 6", "median", "q90", "width below")
PICK = "per config"  # the re-check's candidates: the best trial of each config apart from its lr (--pick best: the best trials)


def config(overrides: list[str]) -> SweepAppConfig:
    register_schemas()
    with initialize_config_module("bpexp.conf", version_base="1.3"):
        cfg = OmegaConf.to_object(compose("sweep", overrides=["sweep.progress=false", *overrides]))
    validate_sweep(cfg)  # as bpexp sweep does: the search space's entries become ParamSpecs
    return cfg


def run_study(cfg: SweepAppConfig, data, tested: dict) -> optuna.Study:
    """The study as `bpexp sweep` runs it (bpexp/study/session.py: the same Session, the same
    batches, asks and tells), in memory and without MLflow."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler(cfg.sweep), direction="minimize")
    lr_units.test_every_config(cfg, data, tested)  # as the sweep does before its first batch
    Session(cfg, study, data, tested=tested).run()
    return study


def study_end(cfg: SweepAppConfig, study: optuna.Study, budget: int, data, tested: dict) -> tuple[list, list]:
    """The study as it would end after `budget` trials: its first `budget` trials in a copy, and
    the trials its end tries next to the best ones (bpexp/study/neighbours.py: sweep.neighbours),
    trained there by the same Session. Returns (the copy's trials with a value, the neighbours)."""
    end = optuna.create_study(sampler=make_sampler(cfg.sweep), direction="minimize")
    end.add_trials(study.trials[:budget])
    extra = train_neighbours(cfg, end, data, tested=tested)
    return [t for t in end.trials[:budget] if t.value is not None], extra


def unseen(cfg: SweepAppConfig, configs: list, data, cache: dict, seeds: list[int]) -> list[Outcome]:
    """Each config's outcome over these unseen seeds (one population for those not yet cached)."""
    todo = list({key(c, seeds): c for c in configs if key(c, seeds) not in cache}.values())
    members = [replace(member_of(c), seed=s) for c in todo for s in seeds]
    results = train_population(members, data, train_spec(cfg.train, sharpness=False)) if todo else []
    constant = constant_loss(data, "train_loss")
    for i, c in enumerate(todo):
        cache[key(c, seeds)] = trial_outcome(results[i * len(seeds):(i + 1) * len(seeds)], "train_loss", constant)
    return [cache[key(c, seeds)] for c in configs]


def key(c, seeds: list[int]) -> tuple:
    return (float(c.train.lr), str(c.model.hidden), str(c.model.activation), seeds[0])


def risk(o: Outcome) -> tuple:
    """The risk measure the recommendation minimises (results/outcome.py: recheck_rank)."""
    return recheck_rank(len(o.failed_seeds), o.mean, 0)


def grid_best(cfg: SweepAppConfig, data) -> Outcome:
    """The grid's best config over the unseen seeds, by the same risk measure."""
    base = member_of(cfg)
    configs = [replace(base, lr=float(lr), hidden=w) for lr in np.logspace(-3, 0, 41)
               for w in (*range(1, 9), 12, 16, 24, 32)]
    results = train_population([replace(m, seed=s) for m in configs for s in UNSEEN], data,
                               train_spec(cfg.train, sharpness=False))
    constant, n = constant_loss(data, "train_loss"), len(UNSEEN)
    outcomes = [trial_outcome(results[i * n:(i + 1) * n], "train_loss", constant) for i in range(len(configs))]
    best = min((i for i, o in enumerate(outcomes) if o.value is not None), key=lambda i: risk(outcomes[i]))
    print(f"grid's best by risk: lr {configs[best].lr:.3g}, {configs[best].hidden} hidden")
    return outcomes[best]


def picks(cfg: SweepAppConfig, done: list, neighbours: list, data) -> tuple[dict[str, object], int]:
    """The trial each rule recommends, from one re-check of the top trials and the neighbours
    (as `bpexp sweep`: recheck.recheck_study), and how many trials the final round took past
    its first sweep.recheck_final (recheck.challengers)."""
    top = and_neighbours(candidates(cfg, done, cfg.sweep.recheck) if PICK == "per config"
                         else top_trials(done, cfg.sweep.recheck), neighbours)
    outcomes, finalists = rechecked(cfg, top, data)
    k = cfg.sweep.seeds + 3  # the old rule: the study's seeds and the first 3 fresh ones, by the worst of them
    old = {n: (sum(1 for s in o.seeds[:k] if s in o.diverged_seeds),
               max(o.seed_values.get(s, np.inf) for s in o.seeds[:k]), n) for n, o in outcomes.items()}
    med = {n: (o.value if o.value is not None else np.inf, n) for n, o in outcomes.items()}
    q90 = {n: (len(o.failed_seeds), o.quantile(0.9) if o.value is not None else np.inf, n) for n, o in outcomes.items()}
    by_number = {t.number: t for t in top}
    # "width below": the product's ranking of the finalists, with the width's failures below the
    # lr (fails_below) ranked between a config's own failed seeds and its mean (min keeps the
    # ranking's order among ties)
    pool = fails_below(cfg, top, outcomes)
    ranked = ranking({n: o for n, o in outcomes.items() if not finalists or n in finalists})
    below = min(ranked, key=lambda n: (outcomes[n].verdict == NOT_FIT, len(outcomes[n].failed_seeds), pool[n]),
                default=None)
    chosen = {"width below": by_number.get(below, top[0]),
              "bpexp": by_number.get(best_of(outcomes, finalists), top[0]),
              "worst of 6": by_number[min(old, key=old.get)], "median": by_number[min(med, key=med.get)],
              "q90": by_number[min(q90, key=q90.get)]}
    return chosen, max(0, len(finalists) - cfg.sweep.recheck_final)


def fails_below(cfg: SweepAppConfig, top: list, outcomes: dict) -> dict[int, float]:
    """An experiment, not the product: for each re-checked trial, the share of failed seeds among
    the re-checked trials of its config apart from the lr at lrs in [lr / 1.6, lr) (a width
    whose seeds stick just below an lr stands near a stuck basin at that lr too: 4 units fail
    on 2-4 % of seeds at lr 0.15-0.18 and ~0.16 % at 0.257, 5 units on none of 1280 at 0.178-0.211)."""
    cfgs = {t.number: trial_config(cfg, t.params) for t in top if t.number in outcomes}
    out = {}
    for n, c in cfgs.items():
        failed = seeds = 0
        for m, d in cfgs.items():
            if m != n and str(d.model.hidden) == str(c.model.hidden) and c.train.lr / 1.6 <= d.train.lr < c.train.lr:
                failed += len(outcomes[m].failed_seeds)
                seeds += len(outcomes[m].seeds)
        out[n] = failed / seeds if seeds else 0.0
    return out


def tell_the_mean() -> None:
    """An experiment, not the product: the Session tells Optuna the mean of a trial's seeds
    (those that did not diverge) instead of their median, so that a seed stuck at 0.27 raises
    the value TPE models ~100x (docs/findings.md, "Seed risk"). Verdicts, the re-check and the
    rule are unchanged."""
    import math

    from bpexp.study import session

    product = session.optuna_state

    def told(o):
        state, value = product(o)
        finite = [v for v in o.seed_values.values() if math.isfinite(v)]
        return state, (float(np.mean(finite)) if value is not None and finite else value)

    session.optuna_state = told


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="sampler seeds 0, 1, ...")
    p.add_argument("--samplers", nargs="*", default=["tpe", "random"], help="none: the reference's row alone")
    p.add_argument("--reference", nargs=2, metavar=("LR", "HIDDEN"),
                   help="a config judged on each sampler seed's unseen seeds, beside the samplers' picks")
    p.add_argument("--pick", choices=["per config", "best"], default="per config",
                   help="the re-check's candidates: the best trial per config apart from its lr, or the best trials")
    p.add_argument("--no-grid", type=float, nargs=3, metavar=("MEDIAN", "MEAN", "WORST"),
                   help="the grid's figures from an earlier run, instead of training it again")
    p.add_argument("--told", choices=["median", "mean"], default="median",
                   help="what Optuna is told a trial's value is: the product's median over the study's seeds, or "
                        "(an experiment, for issue 25) the mean over its seeds that did not diverge")
    p.add_argument("--shared-unseen", action="store_true",
                   help="judge every recommendation on the same 32 unseen seeds (10000-10031), as before 2026-12-03")
    p.add_argument("--detail", action="store_true",
                   help="print each bpexp recommendation: its config, its median and failures on its unseen seeds")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    global PICK
    PICK = a.pick
    if a.told == "mean":
        tell_the_mean()
    base = config(["sweep.n_trials=100", *a.overrides])
    data = dataset_from_config(base.data)
    t0 = time.perf_counter()
    if a.no_grid:
        grid_value, grid_worst = a.no_grid[0], a.no_grid[2]
    else:
        grid = grid_best(base, data)
        grid_value, grid_worst = grid.value, max(grid.seed_values.values())
        print(f"grid (by risk over {len(UNSEEN)} unseen seeds): median {grid.value:.3g}, mean {grid.mean:.3g}, "
              f"worst {grid_worst:.3g}, {len(grid.failed_seeds)} failed ({time.perf_counter() - t0:.0f} s)", flush=True)
    cache: dict = {}
    by_sampler: dict = {}  # sampler -> budget -> the bpexp rule's pick's unseen outcome, a sampler seed each
    print("| sampler | rule | " + " | ".join(f"{b} trials: median / grid's, worst / grid's, seeds failed"
                                             for b in BUDGETS) + " | time |")
    print("|---|---|" + "---|" * len(BUDGETS) + "---|")
    for sampler in a.samplers:
        got = {(r, b): [] for r in RULES for b in BUDGETS}
        took, extra = [], {b: [] for b in BUDGETS}
        for seed in range(a.seeds):
            cfg = config(["sweep.n_trials=100", f"sweep.sampler={sampler}", f"sweep.sampler_seed={seed}", *a.overrides])
            t = time.perf_counter()
            tested: dict = {}
            study = run_study(cfg, data, tested)
            took.append(time.perf_counter() - t)
            for b in BUDGETS:
                done, neighbours = study_end(cfg, study, b, data, tested)
                chosen, more = picks(cfg, done, neighbours, data)
                extra[b].append(more)
                outs = unseen(cfg, [trial_config(cfg, chosen[r].params) for r in RULES], data, cache,
                              unseen_seeds(seed, a.shared_unseen))
                for r, o in zip(RULES, outs):
                    got[(r, b)].append(o)
                if a.detail:
                    t, o = chosen["bpexp"], outs[0]
                    print(f"  {sampler} seed {seed}, {b} trials: #{t.number} "
                          + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in t.params.items())
                          + (f" (next to #{t.user_attrs[NEIGHBOUR_OF]})" if NEIGHBOUR_OF in t.user_attrs else "")
                          + f": median {o.value if o.value is not None else float('nan'):.3g}, failed "
                            f"{len(o.failed_seeds)} of {len(o.seeds)} unseen seeds", flush=True)
        by_sampler[sampler] = {b: got[("bpexp", b)] for b in BUDGETS}
        for r in RULES:
            cells = []
            for b in BUDGETS:
                cells.append(cell(got[(r, b)], grid_value, grid_worst))
            print(f"| {sampler} | {r} | " + " | ".join(cells) + f" | {statistics.median(took):.0f} s |", flush=True)
        print(f"{sampler}: re-checks whose final round went on (recheck.challengers), of {a.seeds}, and the trials it "
              "added: " + ", ".join(f"{b} trials {sum(map(bool, extra[b]))} ({sum(extra[b])})" for b in BUDGETS))
    if a.reference:
        lr, hidden = a.reference
        ref = config(["sweep.n_trials=100", f"train.lr={lr}", f"model.hidden={hidden}", *a.overrides])
        outs = [unseen(ref, [ref], data, cache, unseen_seeds(seed, a.shared_unseen))[0] for seed in range(a.seeds)]
        name = f"reference: lr {lr}, {hidden} hidden"
        print(f"| {name} | - | " + " | ".join([cell(outs, grid_value, grid_worst)] * len(BUDGETS)) + " | - |")
        by_sampler[name] = {b: outs for b in BUDGETS}
    first, *others = list(by_sampler) or [None]
    for other in others:
        for b in BUDGETS:
            print(paired(first, other, b, by_sampler[first][b], by_sampler[other][b]))
    if a.reference and len(by_sampler) > 2:  # every other sampler against the reference too
        for other in others[:-1]:
            for b in BUDGETS:
                print(paired(other, name, b, by_sampler[other][b], by_sampler[name][b]))


def cell(outcomes: list[Outcome], grid_value: float, grid_worst: float) -> str:
    """A table cell: over sampler seeds, the median of the median's ratio to the grid's best and
    of the worst seed's to the grid's worst; and the unseen seeds failed, of all judged."""
    med = statistics.median((o.value if o.value is not None else np.inf) / grid_value for o in outcomes)
    worst = statistics.median(o.quantile(1.0) / grid_worst for o in outcomes)
    failed = sum(len(o.failed_seeds) for o in outcomes)
    return f"{med:.2f}x, {worst:.2f}x, {failed}/{len(outcomes) * len(UNSEEN)}"


def paired(a: str, b: str, budget: int, xs: list[Outcome], ys: list[Outcome]) -> str:
    """Sampler a against b, sampler seed by sampler seed (the two recommendations of seed k are
    judged on the same unseen seeds): which is better by the product's measure (fewer failed
    unseen seeds, then the lower median), and a two-sided sign test over the seeds that differ."""
    key = lambda o: (len(o.failed_seeds), o.value if o.value is not None else np.inf)  # noqa: E731
    wins = sum(key(x) < key(y) for x, y in zip(xs, ys))
    losses = sum(key(x) > key(y) for x, y in zip(xs, ys))
    n, k = wins + losses, min(wins, losses)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return (f"{budget} trials, {a} against {b}, {len(xs)} sampler seeds paired: {a} better on {wins}, {b} on {losses}, "
            f"{len(xs) - n} alike; sign test p = {p:.2g}")


if __name__ == "__main__":
    main()
