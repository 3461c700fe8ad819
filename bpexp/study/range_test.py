"""The learning-rate range test (Smith 2017, "Cyclical learning rates for training neural networks").

One short run whose learning rate rises exponentially, lr_t = lr_min (lr_max/lr_min)^(t/T),
epoch by epoch (optim.Schedule "ramp"). While the lr is small the loss barely moves; as it
grows the loss falls faster; past the largest lr the network tolerates, the loss blows up.
The lr where the loss is lowest marks where useful learning rates end, so it (or a fraction
of it, lr_find.divide_by) is the suggestion. Several init seeds run as one population and
the test reads their median loss, so one lucky or unlucky initialisation doesn't decide.

How far below that lr to go depends on the optimizer (measured against sweeps of train.lr
alone, 5000 epochs, benchmarks/lr_find_vs_sweep.py; docs/findings.md): for full-batch gradient descent
the best constant lr of a long run sits right at the edge of stability, so the lowest-loss lr
itself is the suggestion; momentum and Adam build up speed along the ramp and get past lrs
they cannot sustain for long, so their suggestion is that lr / 4 and / 10.

`bpexp lr-find` records one test (bpexp/commands/lr_find.py); a study may search the lr in units of
the suggestion for each trial's config (bpexp/study/lr_units.py).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from bpexp.config.schema import LrFindAppConfig, LrFindConfig, TrainAppConfig
from bpexp.training.optim import Schedule
from bpexp.training.population import TrainSpec, train_population
from bpexp.config.specs import member_of

DIVIDE_BY = {"gd": 1.0, "momentum": 4.0, "adam": 10.0}  # lr_find.divide_by=null (measured, see above)


def range_test(cfg: LrFindAppConfig, data) -> dict:
    """Train the ramp for every seed; return the lrs, the per-seed and median losses, and
    where the test ends (the first epoch whose median loss exceeds stop_factor x its minimum)."""
    return range_tests(cfg.lr_find, [cfg], data)[0]


def range_tests(f: LrFindConfig, configs: Sequence[TrainAppConfig], data) -> list[dict]:
    """range_test of each train config (its train.lr aside), all of them one population."""
    ramp = Schedule("ramp", lr_max=f.lr_max)
    members = [replace(member_of(c), lr=f.lr_min, schedule=ramp, seed=c.train.seed + i)
               for c in configs for i in range(f.seeds)]
    first = configs[0].train
    results = train_population(members, data, TrainSpec(f.epochs, diverge_above=first.diverge_above, device=first.device))
    lrs = ramp.factors(f.lr_min, f.epochs)
    found = []
    for k, c in enumerate(configs):
        losses = np.full((f.seeds, f.epochs), np.inf)  # a diverged seed's loss is inf from then on
        for i, r in enumerate(results[k * f.seeds:(k + 1) * f.seeds]):
            losses[i, :len(r.train_loss)] = np.where(np.isfinite(r.train_loss), r.train_loss, np.inf)
        median = np.median(losses, axis=0)
        lowest = np.minimum.accumulate(median)
        blown = ~np.isfinite(median) | (median > f.stop_factor * lowest)
        end = max(1, int(np.argmax(blown))) if blown.any() else f.epochs  # epochs [0, end) are the test
        best = int(np.argmin(median[:end]))
        found.append({
            "lrs": lrs, "losses": losses, "median": median, "end": end,
            "lowest_loss_lr": float(lrs[best]), "lowest_loss": float(median[best]),
            "suggested_lr": float(lrs[best] / (f.divide_by or DIVIDE_BY[c.train.optimizer])),
            "blow_up_lr": float(lrs[end]) if end < f.epochs else None,
        })
    return found
