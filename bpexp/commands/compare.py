"""`bpexp compare`: compare recorded runs from MLflow, in a terminal, without the UI.

Takes an experiment (every train run and sweep trial in it), a sweep's parent run (its
trials), or run ids. Prints a ranked table, draws four figures, writes them and the table
under outputs/compare-<run id>/ and records them on a run of their own (bpexp.role=report;
comparing the same runs again writes over the same report run):

- loss curves overlaid (the best runs' train_loss histories);
- final loss vs learning rate, coloured by hidden units, diverged runs marked on top;
- the divergence bracket: lr vs hidden units, converged vs diverged, and for each width the
  bracket [largest lr at which every seed converged, smallest lr at which a seed diverged];
  printed beside 2 / sharpness, the largest stable lr the loss Hessian predicts (stability.py);
- seed spread per config: every seed's final loss, per config (runs that differ only in
  train.seed are one config; a sweep trial carries its seeds' values itself).

Reads only what MLflow holds (params, final metrics, tags, metric histories), so it needs
neither torch nor the configs the runs came from.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from bpexp.recording import plots
from bpexp.results import stability
from bpexp.runtime import stores
from bpexp.recording import tracking
from bpexp.results.outcome import CONVERGED, DIVERGED, NOT_FIT, PARTLY_DIVERGED, PRUNED, VALUED
from bpexp import names
from bpexp.runtime import redaction

SKIP_ROLES = ("study", "lr-find", "report")  # runs that are not a trained network


@dataclass
class Row:
    run_id: str
    name: str
    params: dict
    value: float  # the final metric: the last point of the run's curve (a trial's median over seeds); NaN if none
    seed_values: list = field(default_factory=list)  # the final metric of each seed that converged
    status: str = "converged"  # the run's verdict (bpexp/results/outcome.py)
    n_diverged: int = 0  # its seeds that diverged
    sharpness_init: float | None = None  # lambda_max of the loss Hessian at init (median over seeds)
    sharpness_end: float | None = None  # ... at the last epoch (a run that did not diverge)

    @property
    def diverged(self) -> bool:
        """A seed of it diverged (partly or wholly): the lr is past the edge for this width."""
        return self.status in (DIVERGED, PARTLY_DIVERGED)

    @property
    def lr(self) -> float:
        return float(self.params.get("train.lr", "nan"))

    @property
    def hidden(self) -> str:
        return self.params.get("model.hidden", "?")

    @property
    def units(self) -> float:
        """Hidden units in all: "4" -> 4, "[16, 16]" -> 32 (NaN if not recorded)."""
        return stability.units(self.hidden)

    def config_key(self) -> tuple:
        """What a config is: every param but the seed."""
        return tuple(sorted((k, v) for k, v in self.params.items() if k != "train.seed"))


def row_of(run, metric: str) -> Row | None:
    m, tags = run.data.metrics, run.data.tags
    if tags.get(names.ROLE) in SKIP_ROLES or "train.lr" not in run.data.params:
        return None
    if run.info.status != "FINISHED":
        return None  # a failed, killed or still running run has no final result to rank
    status = tags.get(names.OUTCOME)
    if status is None:  # recorded before bpexp.outcome: a run with one seed
        status = {"finished": CONVERGED}.get(tags.get(names.STATUS, "finished"), tags.get(names.STATUS))
    gone = set(tags["diverged_seeds"].split(",")) if tags.get("diverged_seeds") else set()
    seed_values = [v for k, v in sorted(m.items())  # the seeds that converged; never a "..._diverged" curve
                   if re.fullmatch(rf"{metric}_seed_(\d+)", k) and k[len(f"{metric}_seed_"):] not in gone]
    value = m.get(metric, math.nan) if status in VALUED else math.nan
    return Row(run.info.run_id, run.info.run_name, dict(run.data.params), float(value),
               seed_values or ([float(value)] if math.isfinite(value) else []), status,
               len(gone) or int(status == DIVERGED), m.get("sharpness_init"),
               m.get("sharpness") if status in VALUED else None)


def select_runs(client, experiment: str | None, parent: str | None, run_ids: list[str]) -> list:
    if run_ids:  # a run named twice is compared once (a ranked table lists each run once)
        return [client.get_run(r) for r in dict.fromkeys(run_ids)]
    if parent:
        return tracking.child_runs(client, parent)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"experiment {experiment!r} not found")
    return tracking.search_all(client, exp.experiment_id)


ORDER = {CONVERGED: 0, PARTLY_DIVERGED: 1, NOT_FIT: 2, PRUNED: 3, DIVERGED: 4}


def rank(rows: list[Row]) -> list[Row]:
    """Converged best first, then trials some seeds of which diverged, pruned, diverged."""
    return sorted(rows, key=lambda r: (ORDER.get(r.status, 5), not math.isfinite(r.value), r.value))


def table(rows: list[Row], metric: str, top: int) -> str:
    varying = [k for k in ("data.source", "model.hidden", "train.lr", "train.optimizer", "train.schedule", "model.activation",
                           "train.epochs", "train.seed") if len({r.params.get(k) for r in rows}) > 1] or ["train.lr"]
    head = ["rank", "run", *varying, metric, "seed spread", "status"]
    lines = []
    cell = lambda k, v: f"{float(v):.4g}" if k == "train.lr" else str(v)  # noqa: E731
    for i, r in enumerate(rows[:top], 1):
        spread = max(r.seed_values) - min(r.seed_values) if len(r.seed_values) > 1 else math.nan
        lines.append([str(i), r.name, *(cell(k, r.params.get(k, "")) for k in varying),
                      f"{r.value:.4g}" if math.isfinite(r.value) else "-",
                      "" if math.isnan(spread) else f"{spread:.2g}", r.status])
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    more = [f"... the top {top} of {len(rows)} runs (--top N for more; every run: table.csv)"] if len(rows) > top else []
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, lines), *more])


def csv_table(rows: list[Row], metric: str) -> str:
    import csv
    import io

    keys = sorted({k for r in rows for k in r.params})
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["rank", "run_id", "run_name", *keys, metric, "outcome"])
    for i, r in enumerate(rows, 1):
        out.writerow([i, r.run_id, r.name, *(r.params.get(k, "") for k in keys),
                      repr(r.value) if math.isfinite(r.value) else "", r.status])
    return buf.getvalue()


def stability_of(rows: list[Row]) -> dict:
    """Per width (model.hidden as recorded): the measured bracket and what sharpness predicts
    (bpexp/results/stability.py)."""
    return stability.per_width(stability.Point(r.hidden, r.lr, r.status, r.sharpness_init, r.sharpness_end)
                               for r in rows)


def print_recommendation(parent) -> None:
    """A study's recommendation, when it re-checked its best trials on fresh seeds (bpexp/study/recheck.py)."""
    tags, metrics = parent.data.tags, parent.data.metrics
    if "recommended.trial_number" in tags:
        params = ", ".join(f"{k[len('recommended.'):]}={v}" for k, v in sorted(tags.items())
                           if k.startswith("recommended.") and k != "recommended.trial_number")
        print(f"\nrecommended after re-checking the best trials on fresh seeds: trial #{tags['recommended.trial_number']} "
              f"({params}), median over its own and the fresh seeds {metrics['recommended_value']:.4g}"
              + (f", mean {metrics['recommended_mean']:.4g}" if "recommended_mean" in metrics else "")
              + (f", worst seed {metrics['recommended_worst_seed']:.4g}" if "recommended_worst_seed" in metrics else "")
              + (f", {metrics['recommended_seeds_failed']:.0f} seeds failed" if "recommended_seeds_failed" in metrics
                 else ""))


def print_stability(found: dict) -> None:
    """The measured brackets and the sharpness predictions, one line per width."""
    print("\n" + stability.HEADING)
    print("\n".join(stability.lines(found)) or "  no run to read a bracket from")


def figures(client, rows: list[Row], metric: str, curves: int) -> dict[str, bytes]:
    figs = {}
    best = [r for r in rows if math.isfinite(r.value)][:curves]
    history = []
    for r in best:
        pts = sorted((m.step, m.value) for m in client.get_metric_history(r.run_id, "train_loss"))
        if pts:
            ep, loss = map(np.array, zip(*pts))
            history.append((f"{r.name} (lr {r.lr:.3g}, h {r.hidden})", ep, loss))
    figs["loss_curves.png"] = plots.loss_plot(history, f"train_loss of the {len(history)} best runs")
    ok = [r for r in rows if r.status in (CONVERGED, NOT_FIT) and math.isfinite(r.value)]
    half = [r for r in rows if r.status == PARTLY_DIVERGED and math.isfinite(r.value)]
    div = [r for r in rows if r.status == DIVERGED]
    hid = lambda rs: [r.units for r in rs]  # noqa: E731
    figs["loss_vs_lr.png"] = plots.scatter_plot(
        [r.lr for r in ok], [r.value for r in ok], hid(ok), "learning rate", f"final {metric} (median over seeds)",
        "hidden units", f"final {metric} vs lr", marks=([r.lr for r in div], hid(div)),
        partly=([r.lr for r in half], [r.value for r in half]))
    bad = [r for r in rows if r.diverged]
    figs["divergence_boundary.png"] = plots.boundary_plot(
        [r.lr for r in ok], hid(ok), [r.lr for r in bad], hid(bad),
        {stability.units(h): (b.stable, b.unstable) for h, b in stability_of(rows).items() if b.measured})
    groups = defaultdict(list)
    for r in rows:
        groups[r.config_key()].append(r)
    spread = []
    for g in groups.values():  # a diverged seed counts as worse than any loss, as in a trial's value
        values = [v for r in g for v in r.seed_values] + [math.inf] * sum(r.n_diverged for r in g)
        k = sum(r.n_diverged for r in g)
        if len(values) > 1:
            label = f"lr {g[0].lr:.3g}, h {g[0].hidden}" + (f" ({k} of {len(values)} diverged)" if k else "")
            spread.append((float(np.median(values)), label, values))
    spread = [(label, values) for _, label, values in sorted(spread, key=lambda item: item[0])[:curves]]
    if spread:
        figs["seed_spread.png"] = plots.spread_plot(spread, f"final {metric} of each seed",
                                                    "seed spread per config (best median first)")
    return figs


def compare(uri: str, experiment: str | None, parent: str | None, run_ids: list[str], metric: str,
            top: int, curves: int, argv: Sequence[str] = ()) -> int:
    client = tracking.read_client(uri)  # a StoreError: one line, exit 2 (cli.read_only_command)
    try:
        runs = select_runs(client, experiment, parent, run_ids)
    except Exception as e:
        print(f"bpexp compare: error: {redaction.redact(str(e)).splitlines()[0]}", file=sys.stderr)
        return 2
    rows = rank([r for r in (row_of(run, metric) for run in runs) if r is not None])
    if not rows:
        print("bpexp compare: error: no finished train runs or sweep trials among the selected runs", file=sys.stderr)
        return 2
    print(table(rows, metric, top))
    if parent:
        print_recommendation(client.get_run(parent))
    print_stability(stability_of(rows))
    figs = figures(client, rows, metric, curves)
    exp_id = client.get_run(rows[0].run_id).info.experiment_id
    what = {names.COMPARED: parent or (experiment if not run_ids else ",".join(run_ids))[:5000],
            names.COMPARED_METRIC: metric}
    report = report_run(client, exp_id, what)
    if report is None:
        report = tracking.start_run(client, exp_id, "compare", {**tracking.run_tags("compare", argv),
                                                                names.ROLE: "report", **what})
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


def report_run(client, experiment_id: str, what: dict) -> str | None:
    """The report run an earlier compare of the same runs by the same metric made, to write
    this one's figures and table over (a compare run again is the same report, not one more
    run in the run list); None if there is none."""
    for run in tracking.search_all(client, experiment_id, f"tags.`{names.ROLE}` = 'report'"):
        if all(run.data.tags.get(k) == v for k, v in what.items()):
            return run.info.run_id
    return None


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
    return compare(stores.resolved_uri(a.tracking_uri), a.experiment, a.parent, a.run_ids, a.metric,
                   a.top, a.curves, argv)
