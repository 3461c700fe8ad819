"""`bpexp compare`: compare recorded runs from MLflow, in a terminal, without the UI.

Takes an experiment (every train run and sweep trial in it), a sweep's parent run (its
trials), or run ids. Prints a ranked table, draws four figures, writes them and the table
under outputs/compare-<run id>/ and records them on a run of their own (bpexp.role=report):

- loss curves overlaid (the best runs' train_loss histories);
- final loss vs learning rate, coloured by hidden units, diverged runs marked on top;
- the divergence boundary: lr vs hidden units, converged vs diverged, and for each width the
  geometric middle between the largest lr that converged and the smallest that diverged;
- seed spread per config: every seed's final loss, per config (runs that differ only in
  train.seed are one config; a sweep trial carries its seeds' values itself).

Reads only what MLflow holds (params, final metrics, tags, metric histories), so it needs
neither torch nor the configs the runs came from.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from bpexp import plots, tracking

SKIP_ROLES = ("study", "lr-find", "report")  # runs that are not a trained network


@dataclass
class Row:
    run_id: str
    name: str
    params: dict
    value: float  # the final metric: a sweep trial's median over its seeds, else the run's own
    seed_values: list = field(default_factory=list)
    status: str = "finished"

    @property
    def lr(self) -> float:
        return float(self.params.get("train.lr", "nan"))

    @property
    def hidden(self) -> str:
        return self.params.get("model.hidden", "?")

    @property
    def units(self) -> float:
        """Hidden units in all: "4" -> 4, "[16, 16]" -> 32 (NaN if not recorded)."""
        try:
            widths = json.loads(self.hidden)
        except ValueError:
            return math.nan
        return float(sum(widths) if isinstance(widths, list) else widths)

    def config_key(self) -> tuple:
        """What a config is: every param but the seed."""
        return tuple(sorted((k, v) for k, v in self.params.items() if k != "train.seed"))


def row_of(run, metric: str) -> Row | None:
    m, tags = run.data.metrics, run.data.tags
    if tags.get(tracking.STUDY_ROLE) in SKIP_ROLES or "train.lr" not in run.data.params:
        return None
    if run.info.status != "FINISHED":
        return None  # a failed, killed or still running run has no final result to rank
    seed_values = [v for k, v in sorted(m.items()) if k.startswith(f"{metric}_seed_")]
    value = m.get(f"{metric}_median", m.get(metric, math.nan))
    if seed_values:  # a sweep trial: diverged when its median is the divergence penalty
        diverged = value > float(run.data.params.get("train.diverge_above", "inf"))
    else:
        diverged = tags.get("bpexp.status") == "diverged"
    status = "diverged" if diverged else tags.get("bpexp.status", "finished")
    return Row(run.info.run_id, run.info.run_name, dict(run.data.params), float(value),
               seed_values or [float(value)], status)


def select_runs(client, experiment: str | None, parent: str | None, run_ids: list[str]) -> list:
    if run_ids:
        return [client.get_run(r) for r in run_ids]
    if parent:
        return tracking.child_runs(client, parent)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"experiment {experiment!r} not found")
    return tracking.search_all(client, exp.experiment_id)


def rank(rows: list[Row]) -> list[Row]:
    """Best first; diverged runs last (their final loss says nothing), NaN after them."""
    return sorted(rows, key=lambda r: (r.status == "diverged", not math.isfinite(r.value), r.value))


def table(rows: list[Row], metric: str, top: int) -> str:
    varying = [k for k in ("data.source", "model.hidden", "train.lr", "train.optimizer", "train.schedule", "model.activation",
                           "train.epochs", "train.seed") if len({r.params.get(k) for r in rows}) > 1] or ["train.lr"]
    head = ["rank", "run", *varying, metric, "seed spread", "status"]
    lines = []
    cell = lambda k, v: f"{float(v):.4g}" if k == "train.lr" else str(v)  # noqa: E731
    for i, r in enumerate(rows[:top], 1):
        spread = max(r.seed_values) - min(r.seed_values) if len(r.seed_values) > 1 else math.nan
        lines.append([str(i), r.name, *(cell(k, r.params.get(k, "")) for k in varying), f"{r.value:.4g}",
                      "" if math.isnan(spread) else f"{spread:.2g}", r.status])
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def csv_table(rows: list[Row], metric: str) -> str:
    keys = sorted({k for r in rows for k in r.params})
    out = ["rank,run_id,run_name," + ",".join(keys) + f",{metric},status"]
    for i, r in enumerate(rows, 1):
        out.append(",".join([str(i), r.run_id, r.name, *(str(r.params.get(k, "")) for k in keys), repr(r.value),
                             r.status]))
    return "\n".join(out) + "\n"


def boundary(rows: list[Row], by_units: bool = False) -> dict:
    """Per network shape (model.hidden, or its total units): the geometric middle of the largest
    converged lr and the smallest diverged lr above it (only where both exist): where the
    learning rate starts to blow up."""
    out = {}
    by_hidden = defaultdict(list)
    for r in rows:
        by_hidden[r.units if by_units else r.hidden].append(r)
    for h, rs in by_hidden.items():
        bad = [r.lr for r in rs if r.status == "diverged"]
        good = [r.lr for r in rs if r.status != "diverged" and (not bad or r.lr < min(bad))]
        if good and bad:
            out[h] = math.sqrt(max(good) * min(bad))
    return out


def figures(client, rows: list[Row], metric: str, curves: int) -> dict[str, bytes]:
    figs = {}
    best = [r for r in rows if r.status != "diverged"][:curves]
    history = []
    for r in best:
        pts = sorted((m.step, m.value) for m in client.get_metric_history(r.run_id, "train_loss"))
        if pts:
            ep, loss = map(np.array, zip(*pts))
            history.append((f"{r.name} (lr {r.lr:.3g}, h {r.hidden})", ep, loss))
    figs["loss_curves.png"] = plots.loss_plot(history, f"train_loss of the {len(history)} best runs")
    ok = [r for r in rows if r.status != "diverged" and math.isfinite(r.value)]
    div = [r for r in rows if r.status == "diverged"]
    hid = lambda rs: [r.units for r in rs]  # noqa: E731
    figs["loss_vs_lr.png"] = plots.scatter_plot(
        [r.lr for r in ok], [r.value for r in ok], hid(ok), "learning rate", f"final {metric}", "hidden units",
        f"final {metric} vs lr ({len(div)} diverged: x on top)",
        marks=([r.lr for r in div], hid(div)))
    figs["divergence_boundary.png"] = plots.boundary_plot(
        [r.lr for r in ok], hid(ok), [r.lr for r in div], hid(div),
        boundary(rows, by_units=True))
    groups = defaultdict(list)
    for r in rows:
        groups[r.config_key()].append(r)
    spread = sorted(((f"lr {g[0].lr:.3g}, h {g[0].hidden}", [v for r in g for v in r.seed_values]) for g in
                     groups.values() if sum(len(r.seed_values) for r in g) > 1),
                    key=lambda item: float(np.median(item[1])))[:curves]
    if spread:
        figs["seed_spread.png"] = plots.spread_plot(spread, f"final {metric}", "seed spread per config (best first)")
    return figs


def compare(uri: str, experiment: str | None, parent: str | None, run_ids: list[str], metric: str,
            top: int, curves: int) -> int:
    tracking.quiet_mlflow()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        runs = select_runs(client, experiment, parent, run_ids)
    except Exception as e:
        print(f"bpexp compare: error: {tracking.redact(str(e)).splitlines()[0]}", file=sys.stderr)
        return 2
    rows = rank([r for r in (row_of(run, metric) for run in runs) if r is not None])
    if not rows:
        print("bpexp compare: error: no finished train runs or sweep trials among the selected runs", file=sys.stderr)
        return 2
    print(table(rows, metric, top))
    for h, lr in sorted(boundary(rows).items(), key=lambda kv: (len(kv[0]), kv[0])):
        print(f"divergence boundary, {h} hidden: lr ~ {lr:.3g}")
    figs = figures(client, rows, metric, curves)
    exp_id = client.get_run(rows[0].run_id).info.experiment_id
    what = {"bpexp.compared": parent or (experiment if not run_ids else ",".join(run_ids))[:5000]}
    report = tracking.start_run(client, exp_id, "compare", {**tracking.run_tags("compare"),
                                                            tracking.STUDY_ROLE: "report", **what})
    out = os.path.join("outputs", f"compare-{report}")
    os.makedirs(out, exist_ok=True)
    files = {**figs, "table.csv": csv_table(rows, metric)}
    for name, data in files.items():
        with open(os.path.join(out, name), "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
    tracking.log_files(client, report, {f"compare/{k}": v for k, v in files.items()})
    client.set_terminated(report, "FINISHED")
    print(f"{len(rows)} runs compared; figures and table in {out}/ and on MLflow run {report}")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bpexp compare", description=__doc__.splitlines()[0])
    p.add_argument("run_ids", nargs="*", help="runs to compare (default: the whole experiment)")
    p.add_argument("--experiment", default="bpexp", help="MLflow experiment (default: bpexp)")
    p.add_argument("--parent", default=None, help="a sweep's parent run: compare its trials")
    p.add_argument("--metric", default="train_loss", choices=("train_loss", "test_loss"))
    p.add_argument("--top", type=int, default=20, help="rows of the printed table")
    p.add_argument("--curves", type=int, default=10, help="loss curves and configs in the figures")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./outputs/mlflow.db)")
    a = p.parse_args(argv)
    if a.top < 1 or a.curves < 1:
        p.error(f"--top={a.top} --curves={a.curves}: both must be >= 1")
    return compare(tracking.resolved_uri(a.tracking_uri), a.experiment, a.parent, a.run_ids, a.metric,
                   a.top, a.curves)
