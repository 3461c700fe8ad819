"""What a trained config's MLflow run holds: a `bpexp train` run (one seed) or a sweep's
trial (its seeds), built from the seeds' results and their `Outcome` (bpexp/results/outcome.py).

Metrics are measured losses only, at the recorded epochs (step = epoch):
- `train_loss`, `test_loss`: the run's curves (bpexp/results/outcome.py): for a trial, the per-epoch
  median over its seeds, so the last point of `train_loss` is the trial's value when
  sweep.metric=train_loss (likewise test_loss). A diverged run has none: MLflow shows a
  metric's last point as the run's value, and a loss measured before the blow-up is not one.
- for a trial, each seed's own `train_loss_seed_<s>` and `test_loss_seed_<s>`. A diverged
  seed's curves (a diverged train run's too) are `train_loss_seed_<s>_diverged` and
  `test_loss_seed_<s>_diverged` instead, ending before the epoch it diverged at: under the
  plain name, a chart would take their last point for the seed's final loss.
- for a trial, `objective` (its value, when it has one), `<metric>_spread` over the converged
  seeds and `seeds_diverged`.
- `sharpness` (bpexp/training/sharpness.py: the loss Hessian's lambda_max, train.sharpness_every),
  named and split by seed as the losses are; `sharpness_init`, its first point, so that a
  table of runs can show it beside the last one. 2 / sharpness is the largest learning rate
  at which gradient descent is stable where the network is: `plots/sharpness.svg` draws
  sharpness against 2 / lr.
"""
from __future__ import annotations

import dataclasses
import os
from enum import Enum
from typing import Mapping, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf

from bpexp.recording import svg
from bpexp.recording import tracking
from bpexp.recording import weights
from bpexp.training.csv_data import file_copy
from bpexp.training.data import Dataset
from bpexp.training.network import forward, stack
from bpexp.results.outcome import DIVERGED, PRUNED, STUCK_RATIO, Outcome, final_metric
from bpexp.training.population import MemberResult
from bpexp.recording.recorder import RunRecord
from bpexp import names
from bpexp.runtime import redaction


def config_tree(cfg) -> dict:
    """The config as plain data (choices as their strings): what params and config.yaml hold.
    As OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True), 100x faster (15 ms
    a call, once per trial; tests/test_config.py checks they agree)."""
    return _plain(dataclasses.asdict(cfg))


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Enum):
        return v.value
    return v


def predict(result: MemberResult, x: torch.Tensor) -> np.ndarray:
    """The trained network's output on x (e.g. the dense test grid)."""
    with torch.no_grad():
        out, _ = forward(stack([result.final_weights]), x, result.member.activation)
    return out[0].numpy()


def measured_epochs(result: MemberResult) -> int:
    """Epochs a seed measured: all it trained, but for a diverged one the epoch it diverged at."""
    return len(result.train_loss) - (1 if result.status == "diverged" else 0)


def measured(result: MemberResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, train losses, test epochs, test losses) a seed measured before it stopped: a
    diverged seed's curves end before the epoch it diverged at."""
    n = measured_epochs(result)
    t = int(np.searchsorted(result.test_epochs, n))
    return np.arange(n), result.train_loss[:n], result.test_epochs[:t], result.test_loss[:t]


def measured_sharpness(result: MemberResult) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, sharpness) a seed measured before it stopped, as `measured`."""
    k = int(np.searchsorted(result.sharpness_epochs, measured_epochs(result)))
    return result.sharpness_epochs[:k], result.sharpness[:k]


def train_points(n_train: int, test_epochs) -> list[int]:
    """The epochs whose train loss is recorded, of a curve n_train epochs long: its log points
    (train.log_every, where the test loss is taken) and the last epoch trained, when it fell
    between two of them (a diverged seed's last measured epoch, a train run's last)."""
    every = {int(e) for e in np.asarray(test_epochs).tolist() if e < n_train}
    return sorted(every | {n_train - 1}) if n_train else []


def curve_points(epochs, train, test_epochs, test, sharp_epochs, sharp) -> dict[str, dict[int, float]]:
    """One curve's recorded points, {metric name: {epoch: value}}: train_loss at train_points,
    test_loss at its test epochs, sharpness where measured (no entry when never). What the
    metric history (metric_rows) and loss_curve.csv (curve_csv) both hold."""
    points = {"train_loss": {e: float(train[e]) for e in train_points(len(train), test_epochs)},
              "test_loss": dict(zip(np.asarray(test_epochs).tolist(), np.asarray(test).tolist()))}
    if len(sharp_epochs):
        points["sharpness"] = dict(zip(np.asarray(sharp_epochs).tolist(), np.asarray(sharp).tolist()))
    return points


def metric_rows(results: Sequence[MemberResult], outcome: Outcome, metric: str) -> list[tuple[str, float, int]]:
    trial = len(results) > 1
    rows: list[tuple[str, float, int]] = []

    def curve(suffix: str, *curves) -> None:
        for name, points in curve_points(*curves).items():
            rows.extend((f"{name}{suffix}", v, e) for e, v in points.items())

    c = outcome.curves
    if outcome.verdict != DIVERGED:  # a diverged run's last measured loss is no final one: no chart may take it for one
        curve("", c.epochs, c.train, c.test_epochs, c.test, c.sharpness_epochs, c.sharpness)
        if c.sharpness_init is not None:
            rows.append(("sharpness_init", c.sharpness_init, 0))
    if trial or outcome.verdict == DIVERGED:
        for r in results:
            curve(f"_seed_{r.member.seed}" + ("_diverged" if r.status == "diverged" else ""), *measured(r),
                  *measured_sharpness(r))
    if trial:
        last = len(c.epochs) - 1
        if outcome.value is not None:
            rows.append(("objective", outcome.value, last))
        if outcome.spread is not None:
            rows.append((f"{metric}_spread", outcome.spread, last))
        rows.append(("seeds_diverged", float(len(outcome.diverged_seeds)), last))
        rows.append(("seeds_stuck", float(len(outcome.stuck_seeds)), last))
    return [row for row in rows if np.isfinite(row[1])]  # +inf: the median seed had diverged


def outcome_tags(results: Sequence[MemberResult], outcome: Outcome) -> dict:
    tags: dict = {names.OUTCOME: outcome.verdict}
    if outcome.diverged_seeds:
        stopped = {r.member.seed: r.stopped_at for r in results}
        tags["diverged_seeds"] = ",".join(map(str, outcome.diverged_seeds))
        tags["diverged_epoch"] = min(stopped[s] for s in outcome.diverged_seeds)
    if outcome.stuck_seeds:
        tags["stuck_seeds"] = ",".join(map(str, outcome.stuck_seeds))
    if outcome.verdict == PRUNED:
        tags["pruned_epoch"] = results[0].stopped_at
    return tags


def run_note(results: Sequence[MemberResult], outcome: Outcome, metric: str) -> str:
    """The run's description (its overview page): its verdict, value and each seed, in words."""
    if outcome.value is not None:
        head = f"**{outcome.label}**: {metric} {outcome.value!r}"
        head += f", the median over {len(results)} seeds" if len(results) > 1 else ""
    else:
        head = f"**{outcome.label}**: no {metric} (" + ("pruned" if outcome.verdict == PRUNED else
                                                         "the median seed diverged") + ")"
    lines = [head, ""]
    if len(results) > 1 or outcome.diverged_seeds:
        for r in results:
            if r.status == "diverged":
                lines.append(f"- seed {r.member.seed}: diverged at epoch {r.stopped_at}")
            elif r.status == "pruned":
                lines.append(f"- seed {r.member.seed}: pruned at epoch {r.stopped_at}")
            else:
                stuck = f" (stuck: above {STUCK_RATIO:g}x the median)" if r.member.seed in outcome.stuck_seeds else ""
                lines.append(f"- seed {r.member.seed}: {metric} {final_metric(r, metric)!r}{stuck}")
    return "\n".join(lines).strip()


def curve_csv(results: Sequence[MemberResult], outcome: Outcome) -> str:
    """The run's curves, then each seed's (a trial's), at the epochs the metric history holds
    (curve_points), as exact as MLflow holds them: one table to
    read with pandas or a spreadsheet; blank where a curve has no measured value. Every epoch
    of 5000 was 20x the bytes (docs/findings.md, "Bytes per trial"); train.log_every=1 records
    them all."""
    columns: dict[str, dict[int, float]] = {}

    def add(suffix: str, *curves) -> None:
        columns.update((f"{name}{suffix}", points) for name, points in curve_points(*curves).items())

    c = outcome.curves
    ok = lambda v: np.isfinite(v)  # noqa: E731  (+inf: the median seed had diverged)
    finite = int(np.argmin(ok(c.train))) if not ok(c.train).all() else len(c.train)  # +inf to the end from there
    add("", c.epochs[:finite], c.train[:finite], c.test_epochs[ok(c.test)], c.test[ok(c.test)],
        c.sharpness_epochs[ok(c.sharpness)], c.sharpness[ok(c.sharpness)])
    if len(results) > 1:
        for r in results:
            add(f"_seed_{r.member.seed}", *measured(r), *measured_sharpness(r))
    at = sorted(set().union(*columns.values()))
    cells = [[repr(col[e]) if e in col else "" for col in columns.values()] for e in at]
    return ",".join(["epoch", *columns]) + "\n" + "".join(
        ",".join([str(e), *row]) + "\n" for e, row in zip(at, cells))


def dataset_info(cfg_tree: Mapping, data: Dataset) -> dict:
    """The training data as an MLflow dataset (name, digest, source, schema, profile): the
    function's grid ("sin on [-5, 5], 20 points") or the CSV file. The digest is of the data
    itself: the same points give the same digest, a changed file or noise another."""
    import hashlib
    import json

    d = cfg_tree["data"]
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in (data.x, data.y, data.x_test, data.y_test)))
    if d["source"] == "csv":
        name, source_type, source = os.path.basename(d["path"]), "local", {"uri": d["path"]}
        columns = [*d["inputs"], d["target"]]
    else:
        name = f"{d['fn']} on [{d['x_min']:g}, {d['x_max']:g}], {d['n_points']} points" + (
            f", noise {d['noise']:g}" if d["noise"] else "")
        source_type, source, columns = "code", {"tags": {"bpexp.data": json.dumps(d, sort_keys=True)}}, ["x", "y"]
    schema = {"mlflow_colspec": [{"name": c, "type": "float"} for c in columns]}
    profile = {"num_rows": len(data.y), "num_test_rows": len(data.y_test)}
    return {"name": name, "digest": digest.hexdigest()[:16], "source_type": source_type,
            "source": json.dumps(source), "schema": json.dumps(schema), "profile": json.dumps(profile)}


def run_record(cfg_tree: Mapping, results: Sequence[MemberResult], outcome: Outcome, data: Dataset,
               with_plots: bool, metric: str = "train_loss", with_data: bool = True) -> RunRecord:
    """Everything a trained config's run holds: params, curves, weights, config, figures.
    The weights files are the first seed's (train.seed: the config as recorded reproduces them)."""
    first = results[0]
    rec = RunRecord(
        params=tracking.flatten(cfg_tree),
        metrics=metric_rows(results, outcome, metric),
        tags={**outcome_tags(results, outcome), names.NOTE: run_note(results, outcome, metric)},
        files={
            "config.yaml": OmegaConf.to_yaml(OmegaConf.create(redaction.redact_tree(cfg_tree))),
            "weights/initial.json": weights.weights_json(first.init_weights),
            "weights/final.json": weights.weights_json(first.final_weights),
            "curves/loss_curve.csv": curve_csv(results, outcome),
        },
        dataset=dataset_info(cfg_tree, data),
    )
    if data.sha256:  # read from a file: which file it was, and on train runs the file itself
        rec.tags[names.DATA_SHA256] = data.sha256
        if with_data:
            rec.files.update(file_copy(cfg_tree["data"]["path"]))
    if with_plots:
        rec.files.update(figures(cfg_tree, results, outcome, data))
    return rec


def figures(cfg_tree: Mapping, results: Sequence[MemberResult], outcome: Outcome, data: Dataset) -> dict[str, str]:
    m = results[0].member
    seeds = ", ".join(str(r.member.seed) for r in results)
    title = f"{m.activation}, {m.hidden} hidden, lr {m.lr:.3g}, seed{'s' if len(results) > 1 else ''} {seeds}"
    if outcome.diverged_seeds:
        title += f" ({outcome.label})" if len(results) > 1 else " (diverged)"
    files = {}
    fitted = [r for r in results if r.status != "diverged"]  # a diverged network fits nothing
    if not fitted:
        title = f"no network: every seed diverged; {title}"
    label = (lambda r: f"seed {r.member.seed}") if len(results) > 1 else (lambda r: "network")
    if cfg_tree["data"]["source"] == "function":  # the seed's figure: the fit over x
        files["plots/fit.svg"] = svg.fit_chart(
            data.x_test.numpy(), data.y_test.numpy(), data.x.numpy(), data.y.numpy(),
            [(label(r), predict(r, data.x_test)) for r in fitted], f"fit: {title}")
    else:  # rows of a file, maybe several inputs: predicted vs actual
        files["plots/fit.svg"] = svg.prediction_chart(
            data.y.numpy(), data.y_test.numpy(),
            [(label(r), predict(r, data.x), predict(r, data.x_test)) for r in fitted],
            f"predicted vs actual: {title}")
    c = outcome.curves
    name = " (median over seeds)" if len(results) > 1 else ""
    curves = []  # each seed first, each its own colour (a diverged one red), the medians on top
    if len(results) > 1:
        for i, r in enumerate(results):
            ep, train, _, _ = measured(r)
            why = f" (diverged at {r.stopped_at})" if r.status == "diverged" else ""
            curves.append((f"train, seed {r.member.seed}{why}", ep, train, "#d62728" if why else seed_color(i), 1.0))
    curves += [(f"test{name}", c.test_epochs, c.test, "#ff7f0e", 2.0), (f"train{name}", c.epochs, c.train, "#111111", 2.5)]
    files["plots/loss_curve.svg"] = svg.loss_chart(curves, f"loss: {title}")
    if len(c.sharpness_epochs):
        files["plots/sharpness.svg"] = sharpness_chart(results, outcome, m.lr, title)
    return files


SEED_COLORS = ("#6baed6", "#74c476", "#9e9ac8", "#fd8d3c", "#969696", "#e377c2")


def seed_color(i: int) -> str:
    """The i-th seed's colour: light, distinct, never the median's black or divergence's red."""
    return SEED_COLORS[i % len(SEED_COLORS)]


def sharpness_chart(results: Sequence[MemberResult], outcome: Outcome, lr: float, title: str) -> str:
    """Sharpness against epochs, with 2 / lr: above that line plain gradient descent at this lr
    is unstable where the network is (the edge of stability)."""
    chart = svg.Chart(f"sharpness: {title}", "epoch", "lambda_max of the loss Hessian", logy=True)
    c = outcome.curves
    if len(results) > 1:
        for i, r in enumerate(results):
            ep, sharp = measured_sharpness(r)
            chart.line(ep, sharp, f"seed {r.member.seed}", "#d62728" if r.status == "diverged" else seed_color(i), 1.0)
    chart.line(c.sharpness_epochs, c.sharpness, "median of seeds" if len(results) > 1 else "sharpness", "#111111", 2.5)
    last = max(len(r.train_loss) for r in results) - 1
    chart.line([0, last], [2 / lr, 2 / lr], f"2 / lr = {2 / lr:.4g}", "#2ca02c")
    return chart.render()
