"""`bpexp reproduce RUN_ID`: train a recorded run again from what MLflow holds, and compare.

Reads the run's config.yaml and initial weights (safely: plain YAML into the typed schema,
JSON weights; nothing is unpickled), checks that the initial weights are the ones its seed
draws, trains again, and compares the final loss and weights with the recorded ones.
Works for `bpexp train` runs and for a sweep's child runs (their config is the trial's).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from bpexp.runtime import stores
from bpexp.recording import recorder, tracking
from bpexp.commands.recorded_run import Refused, Stored, download_data, read_stored, unreadable
from bpexp.recording import weights
from bpexp.config.schema import ConfigError
from bpexp.config.validation import load_train_config
from bpexp.training.csv_data import file_sha256
from bpexp.results.outcome import trial_outcome
from bpexp.config.environment import check_memory
from bpexp import names
from bpexp.runtime import redaction

# torch and the modules that train are imported while the reader process reads the run: an
# unknown run id in a local store is answered without either (torch's import is ~1.3 s).

TOLERANCE = 1e-6  # relative, when not bitwise (another machine, torch version or device)


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest relative difference; 0 where both hold the same value (NaN and NaN, inf and
    inf included), inf where only one of them is non-finite."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    a, b = a[differ], b[differ]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float((np.abs(a - b) / np.maximum(np.abs(b), 1e-12)).max()) if a.size else 0.0


def recorded_data(stored: Stored, path: str, reader, uri: str, tmp: str) -> str:
    """The run's CSV file: at its recorded path if the file there is still the same (by its
    SHA-256), else the copy MLflow holds (on the run, or on its sweep's parent run)."""
    sha = stored.tags.get(names.DATA_SHA256)
    if os.path.isfile(path) and file_sha256(path) == sha:
        return path
    runs = (stored.run_id, stored.tags.get("mlflow.parentRunId"))
    local = reader.submit(download_data, uri, runs, f"data/{os.path.basename(path)}", sha, tmp).result()
    if local is None:
        raise ValueError(f"the CSV file {path} is gone or changed, and no recorded copy matches its SHA-256")
    return local


def recorded_curve(text: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, train losses) of seed `seed`, as recorded: a trial's column train_loss_seed_<seed>,
    a train run's train_loss, at the epochs it holds a value (the log points and the last epoch
    measured; every epoch in a run an earlier bpexp recorded; blank cells end a diverged seed's
    curve)."""
    import csv
    import io

    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error:
        raise ValueError("not a CSV file") from None
    column = f"train_loss_seed_{seed}" if rows and f"train_loss_seed_{seed}" in rows[0] else "train_loss"
    try:
        epochs, values, last = [], [], -1
        for line, row in enumerate(rows, start=2):  # a row an epoch, later than the row above, every cell there
            if None in row or None in row.values() or str(int(row["epoch"])) != row["epoch"].strip() or \
                    int(row["epoch"]) <= last:
                raise ValueError(f"line {line} is not a row of epoch and losses")
            last = int(row["epoch"])
            if row[column] != "":
                epochs.append(last)
                values.append(float(row[column]))
        return np.array(epochs, dtype=np.int64), np.array(values)
    except (KeyError, TypeError):
        raise ValueError(f"no numeric column {column}") from None
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith("line") else f"no numeric column {column}") from None


def curve_diff(reproduced: np.ndarray, recorded: tuple[np.ndarray, np.ndarray]) -> float:
    """max_rel_diff of a reproduced train-loss curve (every epoch it measured) and a recorded one
    at the epochs it holds; inf unless both end at the same epoch (a divergence moved)."""
    epochs, values = recorded
    if len(epochs) == 0 or len(reproduced) == 0:
        return 0.0 if len(epochs) == len(reproduced) == 0 else float("inf")
    if epochs[-1] != len(reproduced) - 1:
        return float("inf")
    return max_rel_diff(reproduced[epochs], values)


@dataclass
class Recorded:
    """What a run holds that reproducing it needs, read and checked."""

    run_id: str
    name: str  # the run's name
    cfg: Any  # its TrainAppConfig
    data: Any  # the Dataset it trained on
    initial: dict  # weights as recorded (train.seed's)
    final: dict
    losses: dict  # seed -> (epochs, train losses) as recorded (recorded_curve; a trial: each of its seeds)
    verdict: Optional[str]  # the run's tag bpexp.outcome
    value: Optional[float]  # a trial's objective; a train run's last train_loss
    metric: str  # what the value is of: its study's sweep.metric, or train_loss


def reproduce(run_id: str, uri: str) -> int:
    """Train the run again from what MLflow holds; 0 on a match, 1 on a mismatch, 2 if it cannot be."""
    db = stores.sqlite_file(uri)
    if db is not None and db.is_file() and stores.sqlite_holds_run(db, run_id) is False:
        print(f"bpexp reproduce: error: run {run_id!r} not found in {redaction.redact(uri)}", file=sys.stderr)
        return 2
    tracking.check_readable(uri)  # a StoreError: one line, exit 2 (cli.read_only_command)
    # MLflow is read in a process of its own while this one imports torch and the modules that
    # train (the two imports overlap: docs/findings.md, "Fixed costs")
    reader, whole = recorder.reader(uri), False  # whole: its reads ended, none cut short
    try:
        with tempfile.TemporaryDirectory() as tmp:
            found = reader.submit(read_stored, uri, run_id, tmp)
            import torch

            from bpexp.config.specs import member_of, train_spec
            from bpexp.training.population import train_population

            try:
                stored = found.result()
                if stored.note:
                    print(stored.note)
                recorded = parse_recorded(stored, reader, uri, tmp)
                check_initial_weights(recorded)
            except Refused as e:
                print(f"bpexp reproduce: {e}", file=sys.stderr)
                whole = True
                return e.status
        whole = True
    finally:
        recorder.done_reading(reader, whole)
    cfg = recorded.cfg
    if cfg.train.device.startswith("cuda") and not torch.cuda.is_available():
        cfg.train.device = "cpu"  # compare within the tolerance instead of bitwise
    members = [replace(member_of(cfg), seed=s) for s in recorded.losses]  # every seed, one population
    results = train_population(members, recorded.data, train_spec(cfg.train, sharpness=False))
    return report(recorded, results)


def parse_recorded(stored: Stored, reader, uri: str, tmp: str) -> Recorded:
    """Its config, data, weights and curve, each checked as untrusted input: a file that fails
    is named in one line (Refused), no code in it ever runs (weights.py, validation.py)."""
    files, name = stored.files, "config.yaml"
    try:
        cfg = load_train_config(files[name], check_data=False)
        check_memory(cfg.train.epochs)
        if cfg.data.source == "csv":
            name = "data"
            cfg.data.path = recorded_data(stored, cfg.data.path, reader, uri, tmp)
        name = "weights/initial.json"
        initial = weights.parse_weights(files[name])
        name = "weights/final.json"
        final = weights.parse_weights(files[name])
        from bpexp.training.data import dataset_from_config

        data = dataset_from_config(cfg.data)  # while a downloaded CSV is still there
        name = "curves/loss_curve.csv"
        losses = {s: recorded_curve(files[name], s) for s in recorded_seeds(files[name], cfg.train.seed)}
    except (OSError, ValueError, ConfigError, RecursionError) as e:
        raise unreadable(stored.run_id, name, e) from None
    # the value: a trial's objective; a one-seed trial's or a train run's last point of its metric
    value = stored.metrics.get("objective", stored.metrics.get(stored.metric))
    return Recorded(stored.run_id, stored.name, cfg, data, initial, final, losses, stored.tags.get(names.OUTCOME),
                    value, stored.metric)


def recorded_seeds(text: str, seed: int) -> list[int]:
    """A trial's seeds (its loss_curve.csv's train_loss_seed_<s> columns), or a train run's seed."""
    import re

    header = text.split("\n", 1)[0].split(",")
    seeds = [int(m.group(1)) for c in header if (m := re.fullmatch(r"train_loss_seed_(\d+)", c))]
    return seeds or [seed]


def check_initial_weights(r: Recorded) -> None:
    """The recorded initial weights must be what the config's seed draws (else: exit 1)."""
    from bpexp.training.network import init_weights

    drawn = init_weights(r.cfg.model.hidden, r.cfg.train.seed, r.data.x.shape[1] if r.data.x.dim() == 2 else 1)
    if any(not np.array_equal(drawn[k].numpy(), r.initial[k]) for k in drawn):
        raise Refused(f"error: the recorded initial weights are not what seed {r.cfg.train.seed} draws", 1)


def report(r: Recorded, results) -> int:
    """Print how the new training compares with the record, seed by seed, then the verdict and
    value the seeds make (results/outcome.py); the exit status: 0 on a match, 1 on a mismatch."""
    from bpexp.recording.run_record import measured
    from bpexp.training.data import constant_loss

    cfg = r.cfg
    first = results[0]  # train.seed: the seed whose weights the run holds
    diffs = {f"seed {res.member.seed} train_loss curve": curve_diff(measured(res)[1], r.losses[res.member.seed])
             for res in results}
    diffs.update({f"final {k}": max_rel_diff(first.final_weights[k].numpy(), r.final[k]) for k in r.final})
    outcome = trial_outcome(results, r.metric, constant_loss(r.data, r.metric))
    if r.value is not None or outcome.value is not None:
        diffs[f"the value ({r.metric})"] = max_rel_diff(np.float64(np.nan if outcome.value is None else outcome.value),
                                                      np.float64(np.nan if r.value is None else r.value))
    worst = max(diffs, key=diffs.get)
    seeds = ", ".join(str(res.member.seed) for res in results)
    print(f"run {r.run_id}: {r.name} ({cfg.model.hidden} hidden, lr {cfg.train.lr:g}, "
          f"seed{'s' if len(results) > 1 else ''} {seeds}, {cfg.train.epochs} epochs)")
    for res in results:
        epochs, recorded = r.losses[res.member.seed]
        reproduced = measured(res)[1]
        how = (f"diverged at epoch {res.stopped_at}" if res.status == "diverged" else
               f"last train_loss {reproduced[-1]:.9g}" if len(reproduced) else "no loss")
        was = (f"its losses up to epoch {epochs[-1]}, the last {recorded[-1]:.9g}" if len(recorded) and
               res.status == "diverged" else f"last train_loss {recorded[-1]:.9g}" if len(recorded) else "no loss")
        print(f"  seed {res.member.seed}: {how}; recorded: {was}")
    value = "no value" if outcome.value is None else f"{r.metric} {outcome.value!r}" + (
        f" (the median over {len(results)} seeds)" if len(results) > 1 else "")
    print(f"{outcome.label}: {value}; recorded: {r.verdict}, " + ("no value" if r.value is None else f"{r.metric} {r.value!r}"))
    print(f"largest relative difference: {diffs[worst]:.3g} ({worst})")
    if r.verdict is not None and r.verdict != outcome.verdict:
        print(f"bpexp reproduce: MISMATCH: the seeds make '{outcome.verdict}', the run says '{r.verdict}'",
              file=sys.stderr)
        return 1
    if diffs[worst] == 0:
        nonfinite = [k for k, v in r.final.items() if not np.isfinite(v).all()]
        print("reproduced bit for bit" + (f" (non-finite final weights {', '.join(nonfinite)}, as recorded: "
                                          "the run diverged)" if nonfinite else ""))
        return 0
    if diffs[worst] <= TOLERANCE:
        print(f"reproduced within {TOLERANCE:g} relative")
        return 0
    print(f"bpexp reproduce: MISMATCH: {worst} differs by {diffs[worst]:.3g} relative (> {TOLERANCE:g})",
          file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bpexp reproduce", description=__doc__.splitlines()[0])
    p.add_argument("run_id")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./outputs/mlflow.db)")
    a = p.parse_args(argv)
    return reproduce(a.run_id, stores.resolved_uri(a.tracking_uri))
