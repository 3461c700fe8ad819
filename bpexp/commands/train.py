"""`bpexp train`: one network trained on one config, recorded as one MLflow run.

What the run holds is `bpexp.run_record`'s, the same as a sweep's trial with one seed.
"""
from __future__ import annotations

from typing import Sequence

from bpexp.runtime import ui_links
from bpexp.recording import tracking
from bpexp.config.environment import check_device, check_memory, check_network_memory
from bpexp.config.schema import TrainAppConfig
from bpexp.training.data import constant_loss, dataset_from_config
from bpexp.training.network import shape_name
from bpexp.results.outcome import trial_outcome
from bpexp.training.population import train_population
from bpexp.recording.recorder import Recorder
from bpexp.config.specs import member_of, train_spec
from bpexp.recording.run_record import config_tree, run_record


def train(cfg: TrainAppConfig, uri: str, args: Sequence[str] = ()) -> float:
    """Train the configured network, record it in the tracking store at `uri` (checked and
    resolved: environment.check_tracking_uri), and return its final training MSE."""
    check_device(cfg.train.device)
    check_memory(cfg.train.epochs)
    check_network_memory(cfg.model.hidden, cfg.data)
    name = f"train-h{shape_name(cfg.model.hidden)}-lr{cfg.train.lr:g}-s{cfg.train.seed}" + (
        f"-{cfg.train.optimizer}" if cfg.train.optimizer != "gd" else "")
    with Recorder(uri, cfg.tracking.experiment) as recorder:
        with recorder.run(name, tracking.run_tags("train", args)) as run:
            data = dataset_from_config(cfg.data)
            result = train_population([member_of(cfg)], data, train_spec(cfg.train))[0]
            outcome = trial_outcome([result], "train_loss", constant_loss(data, "train_loss"))
            recorder.record(run.result(), run_record(config_tree(cfg), [result], outcome, data,
                                                     cfg.tracking.log_plots)).result()
    if outcome.value is None:
        print(f"{outcome.verdict} at epoch {result.stopped_at}: no final loss "
              f"(the training loss left the finite range or passed train.diverge_above={cfg.train.diverge_above:g})")
    else:
        print(f"final train_loss {result.final_train_loss:.6g}  test_loss {result.final_test_loss:.6g}  ({outcome.verdict})")
    print(f"MLflow run {run.result()} in experiment '{cfg.tracking.experiment}'")
    print(f"open the MLflow UI: {ui_links.ui_command(uri)}")
    return result.final_train_loss if outcome.value is not None else float("nan")
