"""`bpexp lr-find`: the learning-rate range test (bpexp/study/range_test.py), recorded as one MLflow run.

lr_find.method=sharpness predicts instead of training (bpexp/training/sharpness.py): gradient descent
is stable near a point only while lr < 2 / lambda_max, lambda_max the top eigenvalue of the
loss Hessian there (with heavy-ball momentum mu: lr < 2 (1 + mu) / lambda_max). Measured on
the initial networks of every width, activation and seed asked for, in one population: a
prediction of the divergence edge in about a second, before any sweep (how well it predicts
the measured edge: docs/findings.md, "Where the learning rate stops training").
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Sequence
from dataclasses import replace

import numpy as np

from bpexp.results import stability
from bpexp.runtime import ui_links
from bpexp.recording import svg
from bpexp.recording import tracking
from bpexp.config.schema import ConfigError, LrFindAppConfig
from bpexp.training.data import dataset_from_config
from bpexp.training.network import shape_name
from bpexp.training.budget import memory_problem
from bpexp.training.population import TrainSpec, train_population
from bpexp.study.range_test import range_test
from bpexp.recording.recorder import Recorder, RunRecord
from bpexp.config.specs import member_of
from bpexp.recording.run_record import config_tree
from bpexp.config.environment import check_device, check_network_memory
from bpexp import names

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
    tags = {names.SUGGESTED_LR: f"{found['suggested_lr']:.6g}",
            names.LOWEST_LOSS_LR: f"{found['lowest_loss_lr']:.6g}"}
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


def stability_prediction(cfg: LrFindAppConfig, data) -> list[dict]:
    """2 / lambda_max (2 (1 + mu) / lambda_max with momentum mu) of every initial network: one
    row per width, activation and seed."""
    f = cfg.lr_find
    widths = list(f.widths) if f.widths is not None else [cfg.model.hidden]
    acts = [str(a) for a in f.activations] if f.activations is not None else [str(cfg.model.activation)]
    base = member_of(cfg)
    members = [replace(base, hidden=w if isinstance(w, int) else tuple(w), activation=a, seed=cfg.train.seed + i)
               for w in widths for a in acts for i in range(f.seeds)]
    # One epoch, measuring sharpness before its step: the initial networks'.
    results = train_population(members, data, TrainSpec(1, sharpness_every=1, diverge_above=math.inf, device=cfg.train.device))
    gain = 2 * (1 + cfg.train.momentum) if cfg.train.optimizer == "momentum" else 2.0
    return [{"width": stability.width_of(r.member.hidden), "activation": r.member.activation, "seed": r.member.seed,
             "sharpness": float(r.sharpness[0]), "predicted_lr": gain / float(r.sharpness[0])} for r in results]


def prediction_table(rows: list[dict]) -> dict[tuple[str, str], float]:
    """(width, activation) -> the median predicted lr over the seeds."""
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        by.setdefault((r["width"], r["activation"]), []).append(r["predicted_lr"])
    return {k: float(np.median(v)) for k, v in by.items()}


def prediction_chart(cfg: LrFindAppConfig, rows: list[dict]) -> str:
    """The lr stable at init (2 / sharpness) vs hidden units: each seed as a point, the median as a line."""
    c = svg.Chart(f"stable lr at init (2 / sharpness, a floor), {cfg.train.optimizer}",
                  "hidden units (all layers)", "learning rate", logy=True, logx=True)
    table = prediction_table(rows)
    for a in dict.fromkeys(r["activation"] for r in rows):
        pts = sorted((stability.units(w), lr) for (w, act), lr in table.items() if act == a)
        color = svg.COLORS[len(c.series) % len(svg.COLORS)]
        c.line([x for x, _ in pts], [y for _, y in pts], f"{a}: median over seeds", color)
        mine = [r for r in rows if r["activation"] == a]
        c.points([stability.units(r["width"]) for r in mine], [r["predicted_lr"] for r in mine], f"{a}: each seed", color)
    return c.render()


def prediction_record(cfg: LrFindAppConfig, rows: list[dict], figure: str) -> RunRecord:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["width", "activation", "seed", "sharpness", "predicted_lr"])
    for r in rows:
        out.writerow([r["width"], r["activation"], r["seed"], repr(r["sharpness"]), repr(r["predicted_lr"])])
    metrics = [(f"predicted_lr_h{shape_name(json.loads(w))}_{a}", lr, 0) for (w, a), lr in prediction_table(rows).items()]
    return RunRecord(params=tracking.flatten(config_tree(cfg)), metrics=metrics,
                     files={"plots/stability_prediction.svg": figure, "stability_prediction.csv": buf.getvalue()})


def predict(cfg: LrFindAppConfig, uri: str, args: Sequence[str] = ()) -> float:
    """`bpexp lr-find lr_find=sharpness`: the prediction, recorded, printed; returns the median
    predicted lr of the first width and activation."""
    with Recorder(uri, cfg.tracking.experiment) as recorder:
        with recorder.run("lr-find-sharpness", {**tracking.run_tags("lr-find", args),
                                                names.ROLE: "lr-find"}) as run:
            rows = stability_prediction(cfg, dataset_from_config(cfg.data))
            figure = prediction_chart(cfg, rows)
            recorder.record(run.result(), prediction_record(cfg, rows, figure)).result()
    table = prediction_table(rows)
    acts = list(dict.fromkeys(a for _, a in table))
    bound = "2 (1 + momentum)" if cfg.train.optimizer == "momentum" else "2"
    print(f"the lr below which {cfg.train.optimizer} is stable where the networks start, {bound} / sharpness "
          f"(median over seeds {cfg.train.seed}..{cfg.train.seed + cfg.lr_find.seeds - 1}); a floor, not the edge: "
          "training lowers sharpness, and networks train stably 1.1-3.8x above it (docs/findings.md):")
    head = ["width", *acts]
    lines = [[w, *(f"{table[(w, a)]:.3g}" for a in acts)] for w in dict.fromkeys(w for w, _ in table)]
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    for cells in (head, *lines):
        print("  " + "  ".join(x.ljust(n) for x, n in zip(cells, widths)).rstrip())
    point_to(cfg, run.result(), figure, uri)
    return next(iter(table.values()))


def point_to(cfg: LrFindAppConfig, run_id: str, figure: str, uri: str) -> None:
    """Keep the figure under outputs/ too, and print where it and the run are."""
    os.makedirs("outputs", exist_ok=True)
    path = os.path.join("outputs", f"lr_find-{run_id}.svg")
    with open(path, "w") as fh:
        fh.write(figure)
    print(f"figure: {path}")
    print(f"MLflow run {run_id} in experiment '{cfg.tracking.experiment}'")
    print(f"open the MLflow UI: {ui_links.ui_command(uri)}")


def lr_find(cfg: LrFindAppConfig, uri: str, args: Sequence[str] = ()) -> float:
    """Run the range test (or the sharpness prediction), record it, print the suggestion and return it."""
    check_device(cfg.train.device)
    if cfg.lr_find.method == "sharpness":
        return predict(cfg, uri, args)
    problem = memory_problem(cfg.lr_find.epochs, cfg.lr_find.seeds, cfg.lr_find.seeds)
    if problem:
        raise ConfigError("lr_find.epochs", cfg.lr_find.epochs, problem)
    check_network_memory(cfg.model.hidden, cfg.data, cfg.lr_find.seeds)
    name = f"lr-find-h{shape_name(cfg.model.hidden)}-{cfg.train.optimizer}"
    with Recorder(uri, cfg.tracking.experiment) as recorder:
        with recorder.run(name, {**tracking.run_tags("lr-find", args), names.ROLE: "lr-find"}) as run:
            data = dataset_from_config(cfg.data)
            found = range_test(cfg, data)
            figure = chart(cfg, found)
            recorder.record(run.result(), record(cfg, found, figure)).result()
    blow = found["blow_up_lr"]
    print(f"lowest median loss {found['lowest_loss']:.4g} at lr {found['lowest_loss_lr']:.4g}; "
          + (f"the loss blows up from lr {blow:.4g}" if blow else f"no blow-up up to lr {cfg.lr_find.lr_max:g}"))
    print(f"suggested train.lr = {found['suggested_lr']:.4g}")
    point_to(cfg, run.result(), figure, uri)
    return found["suggested_lr"]
