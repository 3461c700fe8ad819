"""How often does a config fail on a seed nobody tried, and what does it cost to find out?

For each width and lr of a grid on the seed's task (sin on 20 points, plain gradient descent,
5000 epochs), trains every config on 64 init seeds (5000-5063: seeds no study, re-check or
other benchmark uses) as one population, and prints per config: the median final MSE, how
many seeds diverged, how many are stuck (trained to the end above STUCK_RATIO x the median:
bpexp/results/outcome.py), the largest ratio to the median among the seeds that are not stuck
(how far seeds that fit spread) and the smallest among those that are (where stuck seeds
sit): the gap between them is why STUCK_RATIO is 10. Then the re-check's cost: 5 configs x
(3 + k) seeds as one population, for k = 3, 16, 32, 64 fresh seeds, and the chance that a
config failing on 1 seed in 20 (or 1 in 10) shows a failure among k fresh seeds.

    python benchmarks/seed_risk.py                       # docs/findings.md, "Seed risk" (~1 min)
    python benchmarks/seed_risk.py --widths 3 4 --lrs 6   # a quick look
    python benchmarks/seed_risk.py --widths 4 5 --lr-list 0.211 0.257 --seeds 1280 --first-seed 20000 --no-cost
                                                          # rare failures: many seeds, given lrs
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bpexp.results.outcome import STUCK_RATIO
from bpexp.training.data import make_dataset
from bpexp.training.population import Member, TrainSpec, train_population

SEEDS = list(range(5000, 5064))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8])
    p.add_argument("--lrs", type=int, default=14, help="lrs log-spaced in [0.02, 0.5]")
    p.add_argument("--epochs", type=int, default=5000)
    p.add_argument("--lr-list", type=float, nargs="+", help="these lrs instead of --lrs")
    p.add_argument("--seeds", type=int, default=len(SEEDS), help="init seeds per config")
    p.add_argument("--first-seed", type=int, default=SEEDS[0], help="the first of them (then +1, +2, ...)")
    p.add_argument("--cost-only", action="store_true", help="only the re-check's cost")
    p.add_argument("--no-cost", action="store_true", help="only the grid")
    a = p.parse_args()
    SEEDS[:] = range(a.first_seed, a.first_seed + a.seeds)
    data = make_dataset("sin", -5, 5, 20)
    if not a.cost_only:
        grid(a, data)
    if not a.no_cost:
        cost(a, data)


def grid(a, data) -> None:
    lrs = a.lr_list or np.geomspace(0.02, 0.5, a.lrs)
    members = [Member(w, "tanh", float(lr), s) for w in a.widths for lr in lrs for s in SEEDS]
    t0 = time.perf_counter()
    results = train_population(members, data, TrainSpec(a.epochs))
    print(f"{len(members)} networks x {a.epochs} epochs in {time.perf_counter() - t0:.1f} s\n")
    print("| width | lr | median MSE | mean (seeds that did not diverge) | diverged | stuck | "
          "highest seed that fits / median | lowest stuck / median |")
    print("|---|---|---|---|---|---|---|---|")
    n = len(SEEDS)
    fit_spread, stuck_low, fast = [], [], ([], [])  # fast: at lr >= 0.07, where seeds are no longer descending
    for i in range(0, len(results), n):
        rs = results[i:i + n]
        final = np.array([r.final_train_loss if r.status == "finished" else np.inf for r in rs])
        median = float(np.median(final))
        if not np.isfinite(median):
            continue
        ratio = final[np.isfinite(final)] / median
        fits, stuck = ratio[ratio <= STUCK_RATIO], ratio[ratio > STUCK_RATIO]
        fit_spread.append(fits.max())
        stuck_low += list(stuck)
        if rs[0].member.lr >= 0.07:
            fast[0].append(fits.max())
            fast[1].extend(stuck)
        m = rs[0].member
        print(f"| {m.hidden} | {m.lr:.3g} | {median:.3g} | {np.mean(final[np.isfinite(final)]):.3g} | "
              f"{int(np.sum(~np.isfinite(final)))} | {len(stuck)} | "
              f"{fits.max():.1f}x | {'%.0fx' % stuck.min() if len(stuck) else ''} |")
    print(f"\nseeds that fit: within {max(fit_spread):.1f}x of their config's median (95th percentile of the "
          f"configs' highest: {np.percentile(fit_spread, 95):.1f}x); stuck seeds: from "
          f"{min(stuck_low, default=np.nan):.1f}x up (median {np.median(stuck_low) if stuck_low else np.nan:.0f}x)")
    if fast[0]:
        print(f"at lr >= 0.07: seeds that fit within {max(fast[0]):.1f}x, stuck seeds from "
              f"{min(fast[1], default=np.nan):.1f}x up (median {np.median(fast[1]) if fast[1] else np.nan:.0f}x)")


def cost(a, data) -> None:
    print("\n| fresh seeds | re-check: 5 configs x (3 + k) seeds | sees a 1-in-20 failure | a 1-in-10 failure |")
    print("|---|---|---|---|")
    top = [(4, 0.27), (3, 0.30), (5, 0.24), (4, 0.24), (3, 0.28)]  # a default study's top 5
    for k in (3, 16, 32, 64):
        ms = [Member(w, "tanh", lr, 99 + s) for w, lr in top for s in range(3 + k)]
        t0 = time.perf_counter()
        train_population(ms, data, TrainSpec(a.epochs))
        took = time.perf_counter() - t0
        print(f"| {k} | {took:.2f} s | {1 - 0.95 ** k:.0%} | {1 - 0.9 ** k:.0%} |")


if __name__ == "__main__":
    main()
