"""What a study searches: the sampled values of each trial, the samplers and pruners.

`sweep.search_space` maps names to ParamSpecs (bpexp/config/schema.py); a trial's config is the
sweep's config with its sampled values put in (`trial_config`).
"""
from __future__ import annotations

import copy
import functools
import json
import math
import typing
from enum import Enum
from typing import Any, Mapping

import optuna
from omegaconf import OmegaConf

from bpexp.config.schema import ConfigError, ParamSpec, Sampler, SweepAppConfig, SweepConfig, TrainAppConfig
from bpexp.config.validation import validate_train
from bpexp.study.bounded_tpe import BoundedTPESampler


# ----------------------------------------------------------------------------- config
def searched(space: Mapping[str, ParamSpec]) -> list[tuple[str, ParamSpec]]:
    """(dotted config key, spec) of every searched value of sweep.search_space (its entries
    ParamSpecs since the config was made: config/schema.py, SweepConfig)."""
    return [(spec.key or name, spec) for name, spec in space.items()]


def choices(p: ParamSpec) -> list:
    """A categorical's choices as Optuna takes them: scalars. A list (a network shape such as
    [16, 16] for model.hidden) becomes its JSON text, "[16, 16]"; trial_config turns it back."""
    return [json.dumps(list(c)) if OmegaConf.is_list(c) or isinstance(c, (list, tuple)) else c for c in p.choices]


def study_seeds(seed: int, seeds: int) -> list[int]:
    """The init seeds every trial trains on: train.seed, train.seed + 1, ... (sweep.seeds of them)."""
    return [seed + i for i in range(seeds)]


def param_name(key: str, p: ParamSpec) -> str:
    """The Optuna parameter a searched key is sampled as: the key itself, or for an lr in units
    of the range test's suggestion "train.lr / lr_find" (the multiple; the trial's train.lr
    parameter is then the lr itself, bpexp/study/lr_units.py)."""
    return f"{key} / {p.unit}" if p.unit else key


def suggest(trial: optuna.Trial, key: str, p: ParamSpec) -> Any:
    name = param_name(key, p)
    if p.type == "categorical":
        return trial.suggest_categorical(name, choices(p))
    if p.type == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)


def trial_config(cfg: SweepAppConfig, params: dict[str, Any]) -> TrainAppConfig:
    """The train config of one trial: the sweep's config with the sampled values put in.

    Each key is group.field (validate_sweep checked it against the schema); a value takes the
    field's type as OmegaConf would give it (a choice's string its Enum, an int a float's
    type). Plain dataclasses: 0.1 ms a trial, where OmegaConf took 14 ms."""
    c = TrainAppConfig(*(copy.deepcopy(getattr(cfg, g)) for g in ("model", "data", "train", "tracking")))
    for key, value in params.items():
        if " / " in key:  # a multiple of an lr (param_name): its trial's lr is a parameter of its own
            continue
        if isinstance(value, str) and value.startswith("["):  # a list choice (see `choices`)
            value = json.loads(value)
        group, name = key.split(".", 1)
        node = getattr(c, group)
        setattr(node, name, _as_field(value, _field_types(type(node))[name]))
    return c


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def _as_field(value: Any, kind: Any) -> Any:
    """`value` as a field of type `kind` (the schema's), or ValueError where OmegaConf would
    refuse it (1.5 for an int, a string for a number, an unknown choice)."""
    if typing.get_origin(kind) is typing.Union:  # Optional[X]
        if value is None:
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind is Any:
        return value
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value
    if kind in (int, float):
        if not number:
            raise ValueError(f"{value!r} is not a number")
        if kind is float:
            return float(value)
        if not float(value).is_integer():
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if kind is str and number:
        return str(value)
    return value


def check_search_space(cfg: SweepAppConfig) -> None:
    """Every value the search space can produce must be a valid train config."""
    for key, p in searched(cfg.sweep.search_space):
        where = f"sweep.search_space.{key}"
        if p.unit:  # a positive multiple of a positive lr (validate_sweep)
            continue
        values = choices(p) if p.type == "categorical" else [p.low, p.high]
        for v in values:
            if p.type == "int":
                v = int(v)
            try:
                validate_train(trial_config(cfg, {key: v}))
            except ConfigError as e:
                raise ConfigError(where, v, f"gives an invalid config: {e}") from None
            except Exception as e:  # wrong type for the key, e.g. a string for train.lr
                raise ConfigError(where, v, f"not a valid value of {key}: {str(e).splitlines()[0]}") from None


def make_sampler(s: SweepConfig) -> optuna.samplers.BaseSampler:
    """The sweep.sampler, made so that a parameter bpexp derives (train.lr from its multiple of
    the range test's suggestion: bpexp/study/lr_units.py) is never the sampler's to draw."""
    base = _sampler(s)
    derived = {k for k, p in searched(s.search_space) if p.unit}
    return DerivedParams(base, derived) if derived else base


class DerivedParams(optuna.samplers.BaseSampler):
    """A sampler with parameters it does not draw: their values come from the trial's other
    parameters (`derive`, before the trial suggests them). Every trial records such a parameter
    with the same distribution (one that holds every value it can take), so that Optuna's
    importances and optuna-dashboard see it as a dimension of the study (with a distribution of
    one point per trial they read it as constant: importance 0.00). Taken out of the sampler's
    relative search space, it leaves the sampler exactly the space it had when each trial's
    distribution differed (tests/test_lr_units.py: the same trials, bit for bit)."""

    def __init__(self, base: optuna.samplers.BaseSampler, names: set[str]):
        self.base, self.names, self.values = base, set(names), {}

    def derive(self, number: int, name: str, value: float) -> None:
        self.values[(number, name)] = value

    def infer_relative_search_space(self, study, trial):
        space = self.base.infer_relative_search_space(study, trial)
        return {k: d for k, d in space.items() if k not in self.names}

    def sample_relative(self, study, trial, search_space):
        # A trial made with its params (bpexp/study/mirror.py draws them in an in-memory copy,
        # neighbours.py enqueues them) has none left to draw; Optuna still asks for a relative
        # draw at its first suggestion of a param it lacks (the derived lr, set afterwards), and
        # TPE would read every trial from the storage to draw values nobody uses: 2.8-3.2 s of a
        # 100-trial study's main process (py-spy), ~30 ms a trial and growing with the study.
        if all(name in trial.params for name in search_space):
            return {}
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name in self.names:
            return self.values.pop((trial.number, param_name))
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def _sampler(s: SweepConfig) -> optuna.samplers.BaseSampler:
    seed = s.sampler_seed
    # A diverged trial is told PRUNED, with no value, and a violated constraint (Session.tell,
    # bpexp/results/outcome.py): TPE ranks it below every feasible trial, so it learns where the lr is too
    # high. Optuna's GP reads COMPLETE trials only: it never sees a diverged trial (measured: it
    # kept asking for lr = 1 on the default study with plain lrs; docs/findings.md, "How many trials").
    if s.sampler == "tpe":
        # constant_liar: trials asked while others of the batch run are steered away from them.
        # 8 random start-up trials, not Optuna's 10: told 4 at a time (bpexp/study/batches.py: batch_plan),
        # 10 means 12, and 8 measured better at 20 trials (docs/findings.md, "How many trials").
        # BoundedTPESampler: past sweep.tpe_history trials, TPE models the best and the newest
        # ones, so that a draw's cost stops growing with the study (bpexp/study/bounded_tpe.py).
        return BoundedTPESampler(history=s.tpe_history, seed=seed, multivariate=True, constant_liar=True,
                                 n_startup_trials=TPE_STARTUP_TRIALS)
    if s.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if s.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return AskTellGridSampler(grid(s.search_space, s.grid_points), seed=seed)


TPE_STARTUP_TRIALS = 8


def blind_trials(sampler: Sampler) -> float:
    """How many of a study's first trials its sampler draws without reading any result: its
    random start-up trials (Optuna's defaults: GP 10, CMA-ES 1), or all of them (random, grid).
    Telling those one batch at a time teaches the sampler nothing (bpexp/study/batches.py: batch_plan)."""
    return {"tpe": TPE_STARTUP_TRIALS, "gp": 10, "cmaes": 1}.get(str(sampler), math.inf)


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its call to study.stop() once every grid point has a
    trial: that call ends study.optimize(), but raises with ask/tell (after the trial was
    told). Here n_trials ends the sweep; past the grid's size, points are sampled again."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def grid(space: Mapping[str, ParamSpec], points: int) -> dict[str, list]:
    """The grid sampler's values: choices, or grid_points values evenly spaced (log if asked)."""
    import numpy as np

    out = {}
    for key, p in searched(space):
        if p.type == "categorical":
            out[key] = choices(p)
            continue
        n = points
        pts = np.geomspace(p.low, p.high, n) if p.log else np.linspace(p.low, p.high, n)
        out[param_name(key, p)] = sorted({int(round(v)) for v in pts}) if p.type == "int" else [float(v) for v in pts]
    return out


def make_pruner(s: SweepConfig, epochs: int) -> optuna.pruners.BasePruner:
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=epochs // 10)
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=s.report_every, max_resource=epochs)
    return optuna.pruners.NopPruner()
