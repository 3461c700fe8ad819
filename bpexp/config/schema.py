"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore.

The YAML files under `conf/` are merged onto these schemas, so OmegaConf rejects an unknown
key or a value of the wrong type while composing. What a type cannot say (lr > 0, x_min <
x_max, ...) is checked by bpexp/config/validation.py, which names the offending key and value in
one line. Both happen before anything runs or is recorded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from bpexp.runtime.stores import sqlite_uri


class Choice(str, Enum):
    """A choice field: OmegaConf rejects any other value while composing, naming the key and
    the allowed values. A str, so it compares, hashes and prints as its value ("tanh")."""

    def __str__(self) -> str:
        return self.value


# The choices the schema allows; bpexp.network, bpexp.data and bpexp.optim implement exactly
# these (tests check). Named here so that checking a config never imports torch.
Activation = Choice("Activation", [(v, v) for v in ("tanh", "sigmoid", "relu")])
Function = Choice("Function", [(v, v) for v in ("sin", "cos", "gauss", "abs", "cubic")])
Source = Choice("Source", [(v, v) for v in ("function", "csv")])
OptimizerName = Choice("OptimizerName", [(v, v) for v in ("gd", "momentum", "adam")])
ScheduleName = Choice("ScheduleName", [(v, v) for v in ("constant", "step", "exponential", "cosine")])
Sampler = Choice("Sampler", [(v, v) for v in ("tpe", "gp", "cmaes", "random", "grid")])
Pruner = Choice("Pruner", [(v, v) for v in ("none", "median", "hyperband")])
Metric = Choice("Metric", [(v, v) for v in ("train_loss", "test_loss")])
LrFindMethod = Choice("LrFindMethod", [(v, v) for v in ("range_test", "sharpness")])
LrUnit = Choice("LrUnit", [("lr_find", "lr_find")])
LauncherKind = Choice("LauncherKind", [(v, v) for v in ("none", "local", "slurm", "ray", "kubernetes")])


class ConfigError(ValueError):
    """A value the schema's types allow but the problem does not; str() is one line."""

    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"{key}={value!r}: {reason}")

    def __reduce__(self):  # pickles with its three fields (raised across processes)
        return type(self), (self.key, self.value, self.reason)


@dataclass
class ModelConfig:
    hidden: Any = 4  # units of the single hidden layer (the seed's), or a list of layer widths [16, 16]
    activation: Activation = Activation.tanh


@dataclass
class DataConfig:
    source: Source = Source.function  # function: y = fn(x) on a grid (the seed's) | csv: columns of a file
    fn: Function = Function.sin  # the target function, y = fn(x)
    x_min: float = -5.0
    x_max: float = 5.0
    n_points: int = 20  # training points, evenly spaced on [x_min, x_max]
    noise: float = 0.0  # std of Gaussian noise added to the training targets
    noise_seed: int = 0  # the noise is drawn from its own seed, so init seeds don't change the data
    n_test: int = 200  # test points: a dense even grid on the same interval, noise-free
    path: Optional[str] = None  # csv: the file (a header row names the columns)
    inputs: List[str] = field(default_factory=lambda: ["x"])  # csv: input columns, one or more
    target: str = "y"  # csv: the column to fit
    test_fraction: float = 0.2  # csv: rows held out as the test set
    split_seed: int = 0  # csv: the seed of the train/test split


@dataclass
class TrainConfig:
    lr: float = 0.01
    epochs: int = 5000
    seed: int = 99
    device: str = "cpu"
    log_every: int = 0  # epochs between recorded metric points; 0 = epochs // 100 (>= 100 points)
    sharpness_every: int = 0  # epochs between measurements of sharpness (the Hessian's lambda_max); 0 = epochs // 10, at least 200; -1 = never
    diverge_above: float = 1.0e4  # a training MSE above this (or non-finite) means divergence
    optimizer: OptimizerName = OptimizerName.gd  # gd (the seed's w = w - lr * dw) | momentum | adam
    momentum: float = 0.9  # momentum's coefficient; adam's beta1
    beta2: float = 0.999  # adam
    eps: float = 1.0e-8  # adam
    schedule: ScheduleName = ScheduleName.constant  # constant (the seed) | step | exponential | cosine
    decay: float = 0.5  # step / exponential: lr is multiplied by this every decay_every epochs
    decay_every: int = 1000
    lr_min: float = 0.0  # cosine: the lr reached at the last epoch


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite under outputs/
    experiment: str = "bpexp"
    log_plots: bool = True  # figures: each run's fit and loss curves, a study's figures on its parent
    log_model: bool = True  # a sweep's best network as an MLflow model on its parent (~3 s: torch.export)


@dataclass
class ParamSpec:
    """One searched config key. type: float | int | categorical."""

    key: str = ""  # dotted config key; empty = the entry's own name
    type: str = "float"
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[List[Any]] = None
    # lr_find (train.lr only): low and high are multiples of the lr range test's suggestion for
    # the trial's own config (bpexp/study/lr_units.py); train.lr, everywhere, is the lr it trained with
    unit: Optional[LrUnit] = None


@dataclass
class SweepConfig:
    study_name: str = "lr_hidden"
    n_trials: int = 100  # trained trials (converged, partly diverged, diverged) the study ends with; reruns top up
    # name -> a ParamSpec's fields. Typed Any so that an entry can be added on the command line
    # (`+sweep.search_space.act={key: ..., type: ...}`; OmegaConf refuses a dict for a
    # Dict[str, ParamSpec] value); made, each entry becomes a ParamSpec (__post_init__).
    search_space: Dict[str, Any] = field(default_factory=dict)
    sampler: Sampler = Sampler.tpe
    sampler_seed: Optional[int] = 0
    tpe_history: int = 1000  # TPE models the 25 best and the newest tpe_history finished trials (0 = all): a draw's cost stops growing
    grid_points: int = 8  # values per float/int key when sampler=grid
    pruner: Pruner = Pruner.none
    metric: Metric = Metric.train_loss
    seeds: int = 3  # init seeds per trial (train.seed, train.seed+1, ...); objective = median
    batch_size: int = 0  # trials trained together as one population; 0 = automatic (bpexp/study/batches.py: batch_plan)
    sequential_trials: int = 32  # automatic batches: the first trials 4 at a time (TPE's 8 start-up trials: one batch), each told before the next is asked
    recheck: int = 5  # at the end, this many trials (the best of each config apart from the lr) re-trained on fresh seeds; recommended by that (0 = off)
    recheck_seeds: int = 16  # the re-check's fresh seeds (after the study's) in its first round: a 1-in-20 failure shows with 56 % chance (the finalists': 3 + 16 + 80 seeds, 99 %)
    recheck_final: int = 3  # the re-check's final round: its best this-many train on recheck_final_seeds more fresh seeds; while the best of them failed a seed, the next this-many that failed none join them; the recommendation is the best of them over all their seeds (0 = one round)
    recheck_final_seeds: int = 80  # 16 + 80 recommended as well as 32 + 64, with a quarter fewer networks (docs/findings.md, "Neighbours along the lr")
    neighbours: int = 2  # at the end, the neighbours (each int key +-1 step, the lr multiple kept and / neighbour_factor; each log-scale float key x and / neighbour_factor) of this many of the re-check's best candidates are trained as trials and re-checked too (0 = off)
    neighbour_factor: float = 1.5  # a log-scale float key's neighbours (the lr multiple's): x and / this, and an int key's neighbours at / this too (1 = none)
    storage: Optional[str] = None  # None: sqlite under outputs/
    register_as: Optional[str] = None  # MLflow model registry name for the best network
    report_every: int = 250  # epochs between intermediate values reported to the pruner
    progress: bool = True
    end: bool = True  # this command ends the study once its trials are trained (re-check, figures, model, summary); false: train and leave the end to another command (what a launcher's workers do)

    def __post_init__(self) -> None:
        """The search space typed from the start: every entry a ParamSpec as the config is made
        (an unknown field or a wrong type: a ConfigError naming the entry)."""
        for name in list(self.search_space):
            self.search_space[name] = param_spec(f"sweep.search_space.{name}", self.search_space[name])


def param_spec(where: str, entry: Any) -> ParamSpec:
    """One search_space entry as a ParamSpec: unknown fields and wrong types are ConfigErrors."""
    from omegaconf import OmegaConf

    if isinstance(entry, ParamSpec):
        return entry
    if not (isinstance(entry, dict) or OmegaConf.is_dict(entry)):
        raise ConfigError(where, entry, "must be a mapping {key, type, low, high, log, step, choices}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ParamSpec), entry))
    except Exception as e:  # an unknown field, a value of the wrong type
        raise ConfigError(where, entry, str(e).splitlines()[0]) from None


@dataclass
class TrainAppConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass
class LauncherConfig:
    """Where a study's workers run (bpexp/launchers): none = this command is the study's one
    worker; the others start `workers` workers on an engine, each a `bpexp sweep` on the shared
    study, and this command follows them and ends the study. Not part of a study's identity:
    a resume with other workers is the same study."""
    kind: LauncherKind = LauncherKind.none  # none | local (processes here) | slurm (a job array) | ray (tasks on a Ray cluster) | kubernetes (an Indexed Job)
    workers: Optional[int] = None  # workers to start; None: local = this machine's cores // 2, others 4; 0 = start none, follow the study
    follow: bool = True  # follow the study until its workers end, then end it here; false: say how to follow it, and return
    cpus_per_worker: int = 1  # each worker's torch threads; what Slurm, Ray and Kubernetes reserve for it
    partition: Optional[str] = None  # slurm: --partition
    time: Optional[str] = None  # slurm: --time (e.g. 02:00:00)
    sbatch_args: List[str] = field(default_factory=list)  # slurm: more sbatch options, e.g. ["--account=lab"]
    address: Optional[str] = None  # ray: ray.init(address=...); None: $RAY_ADDRESS, else "auto"
    image: Optional[str] = None  # kubernetes: the container image with bpexp installed
    namespace: Optional[str] = None  # kubernetes: the Job's namespace
    secret: str = "bpexp-db"  # kubernetes: the Secret whose key "password" is the database password
    apply: bool = True  # kubernetes: `kubectl apply` the Job when kubectl is on PATH; else only write it


@dataclass
class SweepAppConfig(TrainAppConfig):
    sweep: SweepConfig = field(default_factory=SweepConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)


@dataclass
class LrFindConfig:
    """range_test: lr rises exponentially from lr_min to lr_max over `epochs`, the loss says
    where it stops working. sharpness: no training; the largest stable lr predicted from the
    loss Hessian of the initial networks, 2 / lambda_max, for each width, activation and seed."""

    method: LrFindMethod = LrFindMethod.range_test  # range_test | sharpness
    widths: Optional[List[Any]] = None  # sharpness: model.hidden values to predict for; None: model.hidden
    activations: Optional[List[Activation]] = None  # sharpness: None: model.activation
    lr_min: float = 1.0e-5
    lr_max: float = 10.0
    epochs: int = 500  # a short run: the ramp's length
    seeds: int = 3  # init seeds (train.seed, train.seed+1, ...); the test reads their median loss
    stop_factor: float = 4.0  # the test ends where the loss exceeds this times its lowest value
    divide_by: Optional[float] = None  # suggested lr = lr at the lowest loss / divide_by; None: by optimizer


@dataclass
class LrFindAppConfig(TrainAppConfig):
    lr_find: LrFindConfig = field(default_factory=LrFindConfig)


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainAppConfig)
    cs.store(name="sweep_schema", node=SweepAppConfig)
    cs.store(name="lr_find_schema", node=LrFindAppConfig)


def storage_default(cwd: str | None = None) -> str:
    return sqlite_uri(os.path.join(os.path.abspath(cwd or os.getcwd()), "outputs", "optuna.db"))
