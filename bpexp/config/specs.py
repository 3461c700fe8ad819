"""From the config to the training layer's typed values: a `Member` (one network: its shape,
lr, seed, optimizer and schedule) and a `TrainSpec` (how the population trains). The training
layer never sees the config; everything it is told passes through here.
"""
from __future__ import annotations

from bpexp.config.schema import TrainAppConfig, TrainConfig
from bpexp.training.network import widths_of
from bpexp.training.optim import Optimizer, Schedule
from bpexp.training.population import Member, TrainSpec


def member_of(cfg: TrainAppConfig) -> Member:
    """The network a train config trains, with its own train.seed."""
    t, hidden = cfg.train, cfg.model.hidden
    hidden = hidden if isinstance(hidden, int) else widths_of(hidden)  # a list: each layer's width
    return Member(hidden, str(cfg.model.activation), float(t.lr), t.seed,
                  Optimizer(str(t.optimizer), float(t.momentum), float(t.beta2), float(t.eps)),
                  Schedule(str(t.schedule), float(t.decay), t.decay_every, float(t.lr_min)))


def train_spec(t: TrainConfig, sharpness: bool = True) -> TrainSpec:
    """train.* as a TrainSpec; sharpness=False: no sharpness measurements (a re-check, a
    reproduction: they compare losses only)."""
    return TrainSpec(t.epochs, t.log_every, t.sharpness_every if sharpness else -1, t.diverge_above, t.device)
