"""`bpexp lr-find`: the learning-rate range test, recorded as one MLflow run.

One short run whose learning rate rises exponentially, lr_t = lr_min (lr_max/lr_min)^(t/T),
epoch by epoch (optim.Schedule "ramp"). While the lr is small the loss barely moves; as it
grows the loss falls faster; past the largest lr the network tolerates, the loss blows up.
The lr where the loss is lowest marks where useful learning rates end, so it (or a fraction
of it, lr_find.divide_by) is the suggestion. Several init seeds run as one population and
the test reads their median loss, so one lucky or unlucky initialisation doesn't decide.

How far below that lr to go depends on the optimizer (measured against sweeps of train.lr
alone, 5000 epochs, benchmarks/lr_find_vs_sweep.py; README): for full-batch gradient descent
the best constant lr of a long run sits right at the edge of stability, so the lowest-loss lr
itself is the suggestion; momentum and Adam build up speed along the ramp and get past lrs
they cannot sustain for long, so their suggestion is that lr / 4 and / 10.
"""
from __future__ import annotations

import csv
import io
import os
from typing import Sequence
from dataclasses import replace

import numpy as np

from bpexp import stores, study_record, svg, tracking
from bpexp.config import ConfigError, LrFindAppConfig
from bpexp.data import dataset_from_config
from bpexp.network import shape_name
from bpexp.optim import Schedule
from bpexp.population import memory_problem, train_population
from bpexp.recorder import Recorder, RunRecord
from bpexp.run_record import config_tree, member_of
from bpexp.train import check_device, check_tracking_uri

DIVIDE_BY = {"gd": 1.0, "momentum": 4.0, "adam": 10.0}  # lr_find.divide_by=null (measured, see above)


def range_test(cfg: LrFindAppConfig, data) -> dict:
    """Train the ramp for every seed; return the lrs, the per-seed and median losses, and
    where the test ends (the first epoch whose median loss exceeds stop_factor x its minimum)."""
    f = cfg.lr_find
    ramp = Schedule("ramp", lr_max=f.lr_max)
    base = replace(member_of(cfg), lr=f.lr_min, schedule=ramp)
    members = [replace(base, seed=cfg.train.seed + i) for i in range(f.seeds)]
    results = train_population(members, data, f.epochs, diverge_above=cfg.train.diverge_above,
                               device=cfg.train.device)
    lrs = ramp.factors(f.lr_min, f.epochs)
    losses = np.full((len(results), f.epochs), np.inf)  # a diverged seed's loss is inf from then on
    for i, r in enumerate(results):
        losses[i, :len(r.train_loss)] = np.where(np.isfinite(r.train_loss), r.train_loss, np.inf)
    median = np.median(losses, axis=0)
    lowest = np.minimum.accumulate(median)
    blown = ~np.isfinite(median) | (median > f.stop_factor * lowest)
    end = max(1, int(np.argmax(blown))) if blown.any() else f.epochs  # epochs [0, end) are the test
    best = int(np.argmin(median[:end]))
    return {
        "lrs": lrs, "losses": losses, "median": median, "end": end,
        "lowest_loss_lr": float(lrs[best]), "lowest_loss": float(median[best]),
        "suggested_lr": float(lrs[best] / (f.divide_by or DIVIDE_BY[cfg.train.optimizer])),
        "blow_up_lr": float(lrs[end]) if end < f.epochs else None,
    }


def chart(cfg: LrFindAppConfig, found: dict) -> str:
    """Loss vs lr on log-log axes: each seed, their median, the suggestion."""
    end = found["end"]
    title = (f"lr range test: {cfg.model.activation}, {cfg.model.hidden} hidden, {cfg.train.optimizer}; "
             f"suggested lr {found['suggested_lr']:.3g}")
    c = svg.Chart(title, "learning rate", "training MSE", logy=True, logx=True)
    stop = min(len(found["lrs"]), end + max(1, end // 20))  # a little past the end shows the blow-up
    for i, seed_loss in enumerate(found["losses"]):
        c.line(found["lrs"][:stop], seed_loss[:stop], f"seed {cfg.train.seed + i}", "#bbbbbb")
    c.line(found["lrs"][:stop], found["median"][:stop], "median", "#1f77b4")
    c.points([found["suggested_lr"]], [np.interp(np.log(found["suggested_lr"]), np.log(found["lrs"][:end]),
                                                 found["median"][:end])], "suggested lr", "#d62728")
    return c.render()


def record(cfg: LrFindAppConfig, found: dict, figure: str) -> RunRecord:
    end = found["end"]
    rows = [("lr_find_loss", float(v), e) for e, v in enumerate(found["median"][:end])]
    rows += [("lr", float(v), e) for e, v in enumerate(found["lrs"][:end])]
    rows += [("suggested_lr", found["suggested_lr"], 0), ("lowest_loss", found["lowest_loss"], 0)]
    tags = {"bpexp.suggested_lr": f"{found['suggested_lr']:.6g}",
            "bpexp.lowest_loss_lr": f"{found['lowest_loss_lr']:.6g}"}
    if found["blow_up_lr"] is not None:
        rows.append(("blow_up_lr", found["blow_up_lr"], 0))
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["epoch", "lr", *(f"seed_{cfg.train.seed + i}" for i in range(len(found["losses"]))), "median"])
    for e in range(len(found["lrs"])):
        out.writerow([e, repr(float(found["lrs"][e])), *(repr(float(v)) for v in found["losses"][:, e]),
                      repr(float(found["median"][e]))])
    return RunRecord(params=tracking.flatten(config_tree(cfg)), metrics=rows, tags=tags,
                     files={"plots/lr_find.svg": figure, "curves/lr_find.csv": buf.getvalue()})


def lr_find(cfg: LrFindAppConfig, args: Sequence[str] = ()) -> float:
    """Run the range test, record it, print the suggestion and return it."""
    check_device(cfg.train.device)
    problem = memory_problem(cfg.lr_find.epochs, cfg.lr_find.seeds, cfg.lr_find.seeds)
    if problem:
        raise ConfigError("lr_find.epochs", cfg.lr_find.epochs, problem)
    uri = check_tracking_uri(cfg.tracking.uri)
    name = f"lr-find-h{shape_name(cfg.model.hidden)}-{cfg.train.optimizer}"
    with Recorder(uri, cfg.tracking.experiment) as recorder:
        with recorder.run(name, {**tracking.run_tags("lr-find", args), study_record.STUDY_ROLE: "lr-find"}) as run:
            data = dataset_from_config(cfg.data)
            found = range_test(cfg, data)
            figure = chart(cfg, found)
            recorder.record(run.result(), record(cfg, found, figure)).result()
    os.makedirs("outputs", exist_ok=True)
    path = os.path.join("outputs", f"lr_find-{run.result()}.svg")
    with open(path, "w") as fh:
        fh.write(figure)
    blow = found["blow_up_lr"]
    print(f"lowest median loss {found['lowest_loss']:.4g} at lr {found['lowest_loss_lr']:.4g}; "
          + (f"the loss blows up from lr {blow:.4g}" if blow else f"no blow-up up to lr {cfg.lr_find.lr_max:g}"))
    print(f"suggested train.lr = {found['suggested_lr']:.4g}")
    print(f"figure: {path}")
    print(f"MLflow run {run.result()} in experiment '{cfg.tracking.experiment}'")
    print(f"open the MLflow UI: {stores.ui_command(uri)}")
    return found["suggested_lr"]
