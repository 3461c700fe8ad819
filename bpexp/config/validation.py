"""The checks a type cannot express (lr > 0, x_min < x_max, a CSV's columns, MLflow's name
limits, ...): each failure is a ConfigError naming the key and the value in one line, found
before anything runs or is recorded. The schema they check is bpexp/config/schema.py.
"""
from __future__ import annotations

import math
import os
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from bpexp.config.environment import check_data_file
from bpexp.config.schema import (ConfigError, DataConfig, LrFindAppConfig, SweepAppConfig, TrackingConfig, TrainAppConfig,
                          param_spec)


def _need(ok: bool, key: str, value: Any, reason: str) -> None:
    if not ok:
        raise ConfigError(key, value, reason)


def _finite_positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def validate_train(cfg: TrainAppConfig | DictConfig, check_data: bool = True) -> None:
    """Raise ConfigError for the first out-of-range value of the model/data/train groups."""
    m, d, t = cfg.model, cfg.data, cfg.train
    hidden = list(m.hidden) if isinstance(m.hidden, (list, tuple)) or OmegaConf.is_list(m.hidden) else [m.hidden]
    _need(len(hidden) >= 1 and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden),
          "model.hidden", m.hidden, "must be an integer >= 1 or a list of them (one width per hidden layer)")
    if d.source == "csv" and check_data:  # (not for a recorded config: its file may be elsewhere now)
        check_csv(d)
    _need(math.isfinite(d.x_min) and abs(d.x_min) <= MAX_X, "data.x_min", d.x_min, f"must be within +-{MAX_X:g}")
    _need(math.isfinite(d.x_max) and abs(d.x_max) <= MAX_X, "data.x_max", d.x_max, f"must be within +-{MAX_X:g}")
    _need(d.x_min < d.x_max, "data.x_min", d.x_min, f"must be < data.x_max={d.x_max!r}")
    _need(d.n_points >= 2, "data.n_points", d.n_points, "must be >= 2")
    _need(d.n_test >= 2, "data.n_test", d.n_test, "must be >= 2")
    _need(math.isfinite(d.noise) and d.noise >= 0, "data.noise", d.noise, "must be finite and >= 0")
    _need(_finite_positive(t.lr), "train.lr", t.lr, "must be a finite number > 0")
    _need(t.epochs >= 1, "train.epochs", t.epochs, "must be >= 1")
    _need(0 <= t.seed < MAX_SEED, "train.seed", t.seed, "must be in [0, 2**63 - 2**20): torch's seeds are 64-bit")
    _need(t.log_every >= 0, "train.log_every", t.log_every, "must be >= 0 (0 = automatic)")
    _need(t.sharpness_every >= -1, "train.sharpness_every", t.sharpness_every, "must be >= -1 (0 = automatic, -1 = never)")
    _need(_finite_positive(t.diverge_above), "train.diverge_above", t.diverge_above, "must be a finite number > 0")
    _need(0 <= t.momentum < 1, "train.momentum", t.momentum, "must be in [0, 1)")
    _need(0 <= t.beta2 < 1, "train.beta2", t.beta2, "must be in [0, 1)")
    _need(_finite_positive(t.eps), "train.eps", t.eps, "must be a finite number > 0")
    _need(0 < t.decay <= 1, "train.decay", t.decay, "must be in (0, 1]")
    _need(t.decay_every >= 1, "train.decay_every", t.decay_every, "must be >= 1")
    _need(math.isfinite(t.lr_min) and 0 <= t.lr_min <= t.lr, "train.lr_min", t.lr_min,
          f"must be in [0, train.lr={t.lr!r}]")
    _need(t.device == "cpu" or t.device.startswith("cuda"), "train.device", t.device, "must be cpu or cuda[:N]")
    if hasattr(cfg, "tracking"):
        validate_tracking(cfg.tracking)


# The data and the networks are float32: a target of x^3 / 25 overflows it past |x| ~ 2e13,
# and a fit over such a range means nothing; 1e6 leaves every target function finite.
MAX_X = 1e6
# torch's generators take 64-bit seeds; a sweep's and a re-check's seeds follow train.seed.
MAX_SEED = 2**63 - 2**20
# Optuna's RDB storage keeps a study's name in a column of this many characters.
MAX_STUDY_NAME_LENGTH = 512
# The grid sampler holds its grid in memory, a point per combination.
MAX_GRID = 10**6

# MLflow's limits (mlflow.utils.validation; the tests compare), checked here because the main
# process never imports MLflow: a name MLflow refuses must fail before anything trains.
MAX_EXPERIMENT_NAME_LENGTH = 500


def validate_tracking(tr: TrackingConfig) -> None:
    name = tr.experiment
    _need(isinstance(name, str) and name.strip() != "", "tracking.experiment", name, "must not be empty")
    _need(len(name) <= MAX_EXPERIMENT_NAME_LENGTH, "tracking.experiment", name[:40] + "...",
          f"is {len(name)} characters long; MLflow allows at most {MAX_EXPERIMENT_NAME_LENGTH}")


def model_name_problem(name: str) -> Optional[str]:
    """Why MLflow's model registry refuses this name (its _validate_model_name), or None."""
    import posixpath

    if not name.strip():
        return "must not be empty"
    if "/" in name or ":" in name:
        return "must not contain '/' or ':'"
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(".."):
        return "must not be a relative path such as '.' or '..'"
    return None


def absolute_paths(cfg: TrainAppConfig) -> None:
    """A CSV's path as an absolute one, so the recorded config reproduces from any folder."""
    if cfg.data.source == "csv" and cfg.data.path:
        cfg.data.path = os.path.abspath(cfg.data.path)


def check_csv(d: DataConfig) -> None:
    """The csv source's settings, and the file itself: it exists, has the named numeric
    columns and enough rows for both sides of the split. Reads the file (it is small: the
    whole of it trains as one full batch)."""
    from bpexp.training.csv_data import ColumnError, read_columns

    _need(bool(d.path), "data.path", d.path, "must name a CSV file for data.source=csv")
    _need(len(d.inputs) >= 1, "data.inputs", list(d.inputs), "must name at least one input column")
    _need(d.target not in d.inputs, "data.target", d.target, "must not also be an input column")
    _need(0 < d.test_fraction < 1, "data.test_fraction", d.test_fraction, "must be in (0, 1)")
    check_data_file(d)  # one too big for this machine's memory: refused before it is read
    try:
        rows = len(read_columns(d.path, list(d.inputs), d.target)[1])
    except FileNotFoundError:
        raise ConfigError("data.path", d.path, "no such file") from None
    except IsADirectoryError:
        raise ConfigError("data.path", d.path, "is a folder, not a CSV file") from None
    except PermissionError:
        raise ConfigError("data.path", d.path, "cannot be read (permission denied)") from None
    except KeyError as e:  # a named column the header lacks
        key = "data.target" if e.args[0] == d.target else "data.inputs"
        raise ConfigError(key, e.args[0], f"is not a column of {d.path} ({e.args[1]})") from None
    except ColumnError as e:
        raise ConfigError("data.target" if e.column == d.target else "data.inputs", e.column, str(e)) from None
    except ValueError as e:
        raise ConfigError("data.path", d.path, str(e)) from None
    n_test = round(rows * d.test_fraction)
    _need(n_test >= 1 and rows - n_test >= 2, "data.test_fraction", d.test_fraction,
          f"leaves {rows - n_test} training and {n_test} test rows of {rows} (need >= 2 and >= 1)")


def validate_sweep(cfg: SweepAppConfig | DictConfig) -> None:
    """Check the sweep config (its search_space entries are ParamSpecs from the start: the
    schema's SweepConfig types them; a DictConfig's are typed here)."""
    validate_train(cfg)
    s = cfg.sweep
    _need(s.n_trials >= 1, "sweep.n_trials", s.n_trials, "must be >= 1")
    _need(1 <= s.seeds <= 2**16, "sweep.seeds", s.seeds, "must be in [1, 65536]")
    _need(s.batch_size >= 0, "sweep.batch_size", s.batch_size, "must be >= 0 (0 = automatic)")
    _need(s.sequential_trials >= 0, "sweep.sequential_trials", s.sequential_trials, "must be >= 0")
    _need(s.recheck >= 0, "sweep.recheck", s.recheck, "must be >= 0 (0 = off)")
    _need(s.neighbours >= 0, "sweep.neighbours", s.neighbours, "must be >= 0 (0 = off)")
    _need(1 <= s.neighbour_factor <= 100, "sweep.neighbour_factor", s.neighbour_factor,
          "must be in [1, 100] (1 = no neighbours along a float key)")
    _need(s.recheck_final >= 0, "sweep.recheck_final", s.recheck_final, "must be >= 0 (0 = one round)")
    _need(0 <= s.recheck_final_seeds <= 2**16, "sweep.recheck_final_seeds", s.recheck_final_seeds,
          "must be in [0, 65536] (0 = one round)")
    _need(1 <= s.recheck_seeds <= 2**16, "sweep.recheck_seeds", s.recheck_seeds,
          "must be in [1, 65536] (sweep.recheck=0 turns the re-check off)")
    _need(s.report_every >= 1, "sweep.report_every", s.report_every, "must be >= 1")
    _need(s.grid_points >= 1, "sweep.grid_points", s.grid_points, "must be >= 1")
    _need(s.tpe_history >= 0, "sweep.tpe_history", s.tpe_history, "must be >= 0 (0 = every trial)")
    _need(bool(s.study_name), "sweep.study_name", s.study_name, "must not be empty")
    _need(len(s.study_name) <= MAX_STUDY_NAME_LENGTH, "sweep.study_name", s.study_name[:40] + "...",
          f"is {len(s.study_name)} characters long; Optuna's storage holds at most {MAX_STUDY_NAME_LENGTH}")
    _need(s.storage is None or ":memory:" not in s.storage, "sweep.storage", s.storage,
          "an in-memory storage ends with the command: a study there cannot resume or be shared "
          "(use sqlite:///PATH or a database server)")
    _need(len(s.search_space) > 0, "sweep.search_space", {}, "must name at least one key")
    if s.register_as is not None:
        problem = model_name_problem(s.register_as)
        _need(problem is None, "sweep.register_as", s.register_as, f"is not a valid MLflow model name: {problem}")
        _need(cfg.tracking.log_model, "sweep.register_as", s.register_as, "registers the best model: needs "
                                                                          "tracking.log_model=true")
    train_keys = OmegaConf.structured(TrainAppConfig)
    searched_by: dict[str, str] = {}
    for name in list(s.search_space):
        where = f"sweep.search_space.{name}"
        s.search_space[name] = p = param_spec(where, s.search_space[name])
        key = p.key or name
        _need(key not in searched_by, f"{where}.key", key,
              f"is searched twice (also by sweep.search_space.{searched_by.get(key)}): one entry per key")
        searched_by[key] = name
        _need(OmegaConf.select(train_keys, key, default=None) is not None, f"{where}.key", key,
              "is not a key of the train config (model.*, data.*, train.*)")
        _need(p.type in ("float", "int", "categorical"), f"{where}.type", p.type, "must be float, int or categorical")
        _need(p.unit is None or (key == "train.lr" and p.type == "float"), f"{where}.unit", str(p.unit),
              "is for train.lr of type float only")
        if p.type == "categorical":
            _need(bool(p.choices), f"{where}.choices", p.choices, "must list at least one value")
            continue
        _need(p.low is not None and math.isfinite(p.low), f"{where}.low", p.low, "must be a finite number")
        _need(p.high is not None and math.isfinite(p.high), f"{where}.high", p.high, "must be a finite number")
        _need(p.low < p.high, f"{where}.low", p.low, f"must be < {where}.high={p.high!r}")
        _need(p.unit is None or p.low > 0, f"{where}.low", p.low, "must be > 0: a multiple of the range test's lr")
        _need(not p.log or p.low > 0, f"{where}.low", p.low, "must be > 0 for a log scale")
        _need(p.step is None or p.step > 0, f"{where}.step", p.step, "must be > 0")
        if p.type == "int":
            for field_name in ("low", "high", "step"):
                v = getattr(p, field_name)
                _need(v is None or float(v).is_integer(), f"{where}.{field_name}", v, "must be a whole number for type int")
        _need(p.step is None or p.step <= p.high - p.low, f"{where}.step", p.step,
              f"exceeds the range [{p.low:g}, {p.high:g}]: only one value could be searched")
    if s.sampler == "grid":
        points = math.prod(len(p.choices) if p.type == "categorical" else s.grid_points
                           for p in s.search_space.values())
        _need(points <= MAX_GRID, "sweep.grid_points", s.grid_points,
              f"makes a grid of {points:.3g} points; the grid sampler holds at most {MAX_GRID:g} in memory")


def validate_lr_find(cfg: LrFindAppConfig | DictConfig) -> None:
    validate_train(cfg)
    f = cfg.lr_find
    _need(_finite_positive(f.lr_min), "lr_find.lr_min", f.lr_min, "must be a finite number > 0")
    _need(_finite_positive(f.lr_max) and f.lr_max > f.lr_min, "lr_find.lr_max", f.lr_max,
          f"must be finite and > lr_find.lr_min={f.lr_min!r}")
    _need(f.epochs >= 10, "lr_find.epochs", f.epochs, "must be >= 10")
    _need(f.seeds >= 1, "lr_find.seeds", f.seeds, "must be >= 1")
    _need(_finite_positive(f.stop_factor) and f.stop_factor > 1, "lr_find.stop_factor", f.stop_factor, "must be > 1")
    _need(f.divide_by is None or _finite_positive(f.divide_by), "lr_find.divide_by", f.divide_by,
          "must be a finite number > 0, or null (by optimizer)")
    if f.widths is not None:
        widths = list(f.widths)
        _need(len(widths) >= 1 and all(_is_width(w) for w in widths), "lr_find.widths", widths,
              "must be a list of model.hidden values: integers >= 1 or lists of them")
    _need(f.activations is None or len(f.activations) >= 1, "lr_find.activations", f.activations,
          "must be a non-empty list, or null (model.activation)")
    if f.method == "sharpness":
        _need(cfg.train.optimizer != "adam", "train.optimizer", str(cfg.train.optimizer),
              "lr_find.method=sharpness predicts the stable lr of gradient descent (gd, momentum); "
              "adam's depends on its running averages: use lr_find.method=range_test")


def _is_width(w: Any) -> bool:
    if isinstance(w, int) and not isinstance(w, bool):
        return w >= 1
    return isinstance(w, (list, tuple)) and len(w) >= 1 and all(_is_width(x) and isinstance(x, int) for x in w)


def load_train_config(text: str, check_data: bool = True) -> TrainAppConfig:
    """A train config read back from a recorded run, safely.

    YAML's safe loader builds plain values only (a `!!python/object` tag is an error), and the
    only classes ever instantiated are this module's schema dataclasses: a key the schema lacks
    (`_target_`, say) is rejected rather than followed. Values are then range-checked.
    """
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"config.yaml is not plain YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError("config.yaml does not hold a mapping of config groups")
    data = {k: v for k, v in data.items() if k in ("model", "data", "train", "tracking")}
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainAppConfig), data))
    except Exception as e:  # unknown key, wrong type
        raise ValueError(f"config.yaml does not fit the train schema: {str(e).splitlines()[0]}") from None
    validate_train(cfg, check_data)
    return cfg
