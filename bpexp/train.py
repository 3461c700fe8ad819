"""`bpexp train`: one network trained on one config, recorded as one MLflow run.

What the run holds is `bpexp.run_record`'s, the same as a sweep's trial with one seed.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from bpexp import stores, tracking
from bpexp.config import ConfigError, TrainAppConfig
from bpexp.data import dataset_from_config
from bpexp.network import shape_name
from bpexp.outcome import trial_outcome
from bpexp.population import memory_problem, train_population
from bpexp.recorder import Recorder
from bpexp.run_record import config_tree, member_of, run_record


def check_device(device: str, key: str = "train.device") -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(key, device, "CUDA is not available on this machine")
    if device.startswith("cuda:") and device[5:].isdigit() and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(key, device, f"this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_memory(epochs: int, members: int = 1) -> None:
    problem = memory_problem(epochs, members, members)
    if problem:
        raise ConfigError("train.epochs", epochs, problem)


def check_tracking_uri(uri: Optional[str]) -> str:
    """The resolved tracking URI, checked before anything runs: a server must answer, a local
    store's folder must be writable. Raises ConfigError naming tracking.uri otherwise."""
    uri = stores.resolved_uri(uri)
    problem = stores.store_problem(uri)
    if problem:
        raise ConfigError("tracking.uri", stores.redact(uri), problem)
    return stores.resolve_uri(uri)


def train(cfg: TrainAppConfig, args: Sequence[str] = ()) -> float:
    """Train the configured network, record it, and return its final training MSE."""
    check_device(cfg.train.device)
    check_memory(cfg.train.epochs)
    uri = check_tracking_uri(cfg.tracking.uri)
    name = f"train-h{shape_name(cfg.model.hidden)}-lr{cfg.train.lr:g}-s{cfg.train.seed}" + (
        f"-{cfg.train.optimizer}" if cfg.train.optimizer != "gd" else "")
    with Recorder(uri, cfg.tracking.experiment) as recorder:
        with recorder.run(name, tracking.run_tags("train", args)) as run:
            data = dataset_from_config(cfg.data)
            result = train_population([member_of(cfg)], data, cfg.train.epochs, log_every=cfg.train.log_every,
                                      sharpness_every=cfg.train.sharpness_every,
                                      diverge_above=cfg.train.diverge_above, device=cfg.train.device)[0]
            outcome = trial_outcome([result], "train_loss")
            recorder.record(run.result(), run_record(config_tree(cfg), [result], outcome, data,
                                                     cfg.tracking.log_plots)).result()
    if outcome.value is None:
        print(f"{outcome.verdict} at epoch {result.stopped_at}: no final loss "
              f"(the training loss left the finite range or passed train.diverge_above={cfg.train.diverge_above:g})")
    else:
        print(f"final train_loss {result.final_train_loss:.6g}  test_loss {result.final_test_loss:.6g}  ({outcome.verdict})")
    print(f"MLflow run {run.result()} in experiment '{cfg.tracking.experiment}'")
    print(f"open the MLflow UI: {stores.ui_command(uri)}")
    return result.final_train_loss if outcome.value is not None else float("nan")
