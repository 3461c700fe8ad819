"""`bpexp train`: one network trained on one config, recorded as one MLflow run.

`run_record` is also what every trial of a sweep records, so a sweep's child run holds
everything a train run holds.
"""
from __future__ import annotations

import io
from typing import Any, Mapping, Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from bpexp import svg, tracking
from bpexp.config import ConfigError, TrainAppConfig
from bpexp.csv_data import file_copy
from bpexp.data import Dataset, dataset_from_config
from bpexp.network import forward, shape_name, stack, widths_of
from bpexp.optim import Optimizer, Schedule
from bpexp.population import Member, MemberResult, train_population
from bpexp.recorder import Recorder, RunRecord


def member_of(cfg) -> Member:
    t, hidden = cfg.train, cfg.model.hidden
    hidden = hidden if isinstance(hidden, int) else widths_of(hidden)  # a list: each layer's width
    return Member(hidden, cfg.model.activation, float(t.lr), t.seed,
                  Optimizer(t.optimizer, float(t.momentum), float(t.beta2), float(t.eps)),
                  Schedule(t.schedule, float(t.decay), t.decay_every, float(t.lr_min)))


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device", device, "CUDA is not available on this machine")


def check_tracking_uri(uri: Optional[str]) -> str:
    """The resolved tracking URI, checked before anything runs: a server must answer, a local
    store's folder must be writable. Raises ConfigError naming tracking.uri otherwise."""
    uri = tracking.resolved_uri(uri)
    problem = tracking.store_problem(uri)
    if problem:
        raise ConfigError("tracking.uri", tracking.redact(uri), problem)
    return tracking.resolve_uri(uri)


def predict(result: MemberResult, x: torch.Tensor) -> np.ndarray:
    """The trained network's output on x (e.g. the dense test grid)."""
    with torch.no_grad():
        out, _ = forward(stack([result.final_weights]), x, result.member.activation)
    return out[0].numpy()


def curve_csv(result: MemberResult) -> str:
    """The exact per-epoch curve: every epoch's train loss, the test loss where evaluated."""
    test = dict(zip(result.test_epochs.tolist(), result.test_loss.tolist()))
    buf = io.StringIO()
    buf.write("epoch,train_loss,test_loss\n")
    for e, v in enumerate(result.train_loss.tolist()):
        t = test.get(e)
        buf.write(f"{e},{v!r},{'' if t is None else repr(t)}\n")
    return buf.getvalue()


def metric_rows(result: MemberResult) -> list[tuple[str, float, int]]:
    """train_loss and test_loss at the recorded epochs (step = epoch), the last epoch included."""
    rows = [("train_loss", float(result.train_loss[e]), int(e)) for e in result.test_epochs]
    rows += [("test_loss", float(v), int(e)) for e, v in zip(result.test_epochs, result.test_loss)]
    last = len(result.train_loss) - 1
    if last not in set(result.test_epochs.tolist()):  # stopped between two recorded epochs
        rows.append(("train_loss", float(result.train_loss[last]), last))
    return rows


def status_tags(result: MemberResult) -> dict[str, Any]:
    tags: dict[str, Any] = {"bpexp.status": result.status}
    if result.status == "diverged":
        tags.update({"diverged": "true", "diverged_epoch": result.stopped_at})
    elif result.status == "pruned":
        tags["pruned_epoch"] = result.stopped_at
    return tags


def run_record(cfg_tree: Mapping, result: MemberResult, data: Dataset, with_plots: bool,
               with_data: bool = True) -> RunRecord:
    """Everything a trained network's run holds: params, curves, weights, config, figures."""
    rec = RunRecord(
        params=tracking.flatten(cfg_tree),
        metrics=metric_rows(result),
        tags=status_tags(result),
        files={
            "config.yaml": OmegaConf.to_yaml(OmegaConf.create(tracking.redact_tree(cfg_tree))),
            "weights/initial.json": tracking.weights_json(result.init_weights),
            "weights/final.json": tracking.weights_json(result.final_weights),
            "curves/loss_curve.csv": curve_csv(result),
        },
    )
    if data.sha256:  # read from a file: which file it was, and on train runs the file itself
        rec.tags["bpexp.data_sha256"] = data.sha256
        if with_data:
            rec.files.update(file_copy(cfg_tree["data"]["path"]))
    if with_plots:
        m = result.member
        title = f"{m.activation}, {m.hidden} hidden, lr {m.lr:.3g}, seed {m.seed}"
        if cfg_tree["data"]["source"] == "function":  # the seed's figure: the fit over x
            rec.files["plots/fit.svg"] = svg.fit_chart(
                data.x_test.numpy(), data.y_test.numpy(), data.x.numpy(), data.y.numpy(),
                predict(result, data.x_test), f"fit: {title}")
        else:  # rows of a file, maybe several inputs: predicted vs actual
            rec.files["plots/fit.svg"] = svg.prediction_chart(
                data.y.numpy(), predict(result, data.x), data.y_test.numpy(), predict(result, data.x_test),
                f"predicted vs actual: {title}")
        rec.files["plots/loss_curve.svg"] = svg.loss_chart(
            [("train", np.arange(len(result.train_loss)), result.train_loss),
             ("test", result.test_epochs, result.test_loss)], f"loss: {title}")
    return rec


def config_tree(cfg) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def train(cfg: TrainAppConfig) -> float:
    """Train the configured network, record it, and return its final training MSE."""
    check_device(cfg.train.device)
    uri = check_tracking_uri(cfg.tracking.uri)
    name = f"train-h{shape_name(cfg.model.hidden)}-lr{cfg.train.lr:g}-s{cfg.train.seed}" + (
        f"-{cfg.train.optimizer}" if cfg.train.optimizer != "gd" else "")
    with Recorder(uri, cfg.tracking.experiment) as recorder:
        with recorder.run(name, tracking.run_tags("train")) as run:
            data = dataset_from_config(cfg.data)
            result = train_population([member_of(cfg)], data, cfg.train.epochs, log_every=cfg.train.log_every,
                                      diverge_above=cfg.train.diverge_above, device=cfg.train.device)[0]
            recorder.record(run.result(), run_record(config_tree(cfg), result, data, cfg.tracking.log_plots)).result()
    test = result.final_test_loss if len(result.test_loss) else float("nan")
    print(f"final train_loss {result.final_train_loss:.6g}  test_loss {test:.6g}  ({result.status}"
          + (f" at epoch {result.stopped_at})" if result.stopped_at is not None else ")"))
    print(f"MLflow run {run.result()} in experiment '{cfg.tracking.experiment}'")
    print(f"open the MLflow UI: {tracking.ui_command(uri)}")
    return result.final_train_loss
