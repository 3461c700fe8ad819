"""`bpexp sweep`: an Optuna study over the train config, trained a batch of trials at a time.

Reads top to bottom like an Optuna objective, but batched with ask/tell: ask the sampler for
a batch of trials (TPE's constant liar keeps a batch diverse), train all their seeds as one
population, report intermediate losses to the pruner from inside that training loop, record
every trial as an MLflow child run of the study's parent run, then tell Optuna the results.

Every trial's state lives in Optuna's storage, the source of truth when a sweep resumes:
- a child run is recorded (RUNNING) before its trial is told, and finished after, so a
  COMPLETE trial always has its run and a killed sweep leaves no FINISHED run for a failed trial;
- on start, trials left RUNNING by a dead worker are failed (by pid on this host, by Optuna's
  heartbeat elsewhere) and their MLflow runs marked KILLED;
- the study remembers the config it was created with and refuses to mix in another one.
"""
from __future__ import annotations

import bisect
import datetime
import json
import math
import os
import signal
import socket
import statistics
import threading
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Optional

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from bpexp import tracking
from bpexp.config import ConfigError, ParamSpec, SweepAppConfig, TrainAppConfig, storage_default, validate_train
from bpexp.csv_data import file_copy
from bpexp.data import dataset_from_config
from bpexp.outcome import (CONSTRAINT, CONVERGED, DIVERGED, PARTLY_DIVERGED, PRUNED, Outcome, optuna_attrs,
                           optuna_state, trial_outcome, verdict_of)
from bpexp.population import MemberResult, train_population
from bpexp.recorder import Recorder
from bpexp.run_record import config_tree, member_of, run_record
from bpexp.train import check_device, check_tracking_uri

POLL_S = 2.0  # how often an idle worker checks on the trials other workers run
HEARTBEAT_S = 20  # how often a worker marks its trials alive in the storage
GRACE_S = 60  # a RUNNING trial without a heartbeat for this long is failed by the next worker
WORKER = f"{socket.gethostname()}:{os.getpid()}"
# Searched keys fixed by a study, so that a resumed study never mixes two experiments.
FINGERPRINT_SWEEP_KEYS = ("search_space", "seeds", "metric", "direction")


_failpoint_hits: Counter = Counter()


def failpoint(name: str) -> None:
    """Die here as kill -9 would, when $BPEXP_FAILPOINT is "name" or "name:n" (the n-th time
    this point is reached). For the crash-safety tests; a no-op otherwise."""
    want, _, nth = os.environ.get("BPEXP_FAILPOINT", "").partition(":")
    if want == name:
        _failpoint_hits[name] += 1
        if _failpoint_hits[name] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- config
def searched(cfg: SweepAppConfig) -> list[tuple[str, ParamSpec]]:
    """(dotted config key, spec) of every searched value."""
    return [(spec.key or name, spec) for name, spec in cfg.sweep.search_space.items()]


def choices(p: ParamSpec) -> list:
    """A categorical's choices as Optuna takes them: scalars. A list (a network shape such as
    [16, 16] for model.hidden) becomes its JSON text, "[16, 16]"; trial_config turns it back."""
    return [json.dumps(list(c)) if OmegaConf.is_list(c) or isinstance(c, (list, tuple)) else c for c in p.choices]


def suggest(trial: optuna.Trial, key: str, p: ParamSpec) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(key, choices(p))
    if p.type == "int":
        return trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)


def trial_config(cfg: SweepAppConfig, params: dict[str, Any]) -> TrainAppConfig:
    """The train config of one trial: the sweep's config with the sampled values put in."""
    c = OmegaConf.structured(TrainAppConfig(cfg.model, cfg.data, cfg.train, cfg.tracking))
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("["):  # a list choice (see `choices`)
            value = json.loads(value)
        OmegaConf.update(c, key, value)
    return OmegaConf.to_object(c)


def check_search_space(cfg: SweepAppConfig) -> None:
    """Every value the search space can produce must be a valid train config."""
    for key, p in searched(cfg):
        where = f"sweep.search_space.{key}"
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


def fingerprint(cfg: SweepAppConfig) -> dict:
    tree = config_tree(cfg)
    fixed = {k: tree[k] for k in ("model", "data", "train")}
    fixed["train"].pop("device", None)
    fixed["sweep"] = {k: tree["sweep"][k] for k in FINGERPRINT_SWEEP_KEYS}
    return json.loads(json.dumps(fixed, sort_keys=True, default=str))


def make_sampler(cfg: SweepAppConfig) -> optuna.samplers.BaseSampler:
    s, seed = cfg.sweep, cfg.sweep.sampler_seed
    # A diverged trial carries a violated constraint (finish_batch, bpexp/outcome.py): TPE and GP
    # rank infeasible trials below every feasible one, so they learn where the lr is too high.
    if s.sampler == "tpe":
        # constant_liar: trials asked while others of the batch run are steered away from them
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if s.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if s.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return AskTellGridSampler(grid(cfg), seed=seed)


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its call to study.stop() once every grid point has a
    trial: that call ends study.optimize(), but raises with ask/tell (after the trial was
    told). Here n_trials ends the sweep; past the grid's size, points are sampled again."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def grid(cfg: SweepAppConfig) -> dict[str, list]:
    """The grid sampler's values: choices, or grid_points values evenly spaced (log if asked)."""
    import numpy as np

    out = {}
    for key, p in searched(cfg):
        if p.type == "categorical":
            out[key] = choices(p)
            continue
        n = cfg.sweep.grid_points
        pts = np.geomspace(p.low, p.high, n) if p.log else np.linspace(p.low, p.high, n)
        out[key] = sorted({int(round(v)) for v in pts}) if p.type == "int" else [float(v) for v in pts]
    return out


def make_pruner(cfg: SweepAppConfig) -> optuna.pruners.BasePruner:
    s = cfg.sweep
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=cfg.train.epochs // 10)
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=s.report_every, max_resource=cfg.train.epochs)
    return optuna.pruners.NopPruner()


# ----------------------------------------------------------------------------- study
def open_study(cfg: SweepAppConfig) -> tuple[optuna.Study, bool]:
    """Create or load the study; True if this worker created it (and so owns its set-up)."""
    url = cfg.sweep.storage or storage_default()
    storage = open_storage(url)
    kwargs = dict(study_name=cfg.sweep.study_name, storage=storage, sampler=make_sampler(cfg), pruner=make_pruner(cfg))
    mine = fingerprint(cfg)
    try:
        # The study name is unique in the storage: of several workers starting at once exactly
        # one creates the study, and that one alone creates the MLflow parent run.
        study = optuna.create_study(direction=cfg.sweep.direction, **kwargs)
        with warnings.catch_warnings():  # experimental since 3.2, and what optuna-dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([cfg.sweep.metric])  # the dashboard's axis, not "Objective 0"
        study.set_user_attr("bpexp.config", mine)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kwargs)
    theirs = wait_for_attr(study, "bpexp.config")
    if theirs is None:
        study.set_user_attr("bpexp.config", mine)
    elif theirs != mine:
        key, old, new = first_difference(tracking.flatten(theirs), tracking.flatten(mine))
        raise ConfigError(key, new, f"study '{cfg.sweep.study_name}' was created with {key}={old!r}; "
                                    "resume it with the same config or choose another sweep.study_name")
    return study, False


def open_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage, created once per database even when workers start together.

    Opening a new database creates Optuna's tables. A sqlite file is locked meanwhile
    (tracking.local_store_lock). On a server (PostgreSQL, MySQL), workers that start at once
    race to create the same tables; a loser fails with a duplicate-key or duplicate-table
    error and simply opens the database again, now created. Anything else (a malformed URL,
    a server that is down, a folder we cannot write) is a ConfigError naming sweep.storage.
    """
    import random

    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings(), tracking.local_store_lock(url):
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats, since 2.9
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                                  engine_kwargs=engine_kwargs(url))
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())  # another worker is creating the tables
        except Exception as e:
            reason = tracking.redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
            raise ConfigError("sweep.storage", tracking.redact(url), f"cannot open this Optuna storage: {reason}") from None
    raise AssertionError("unreachable")


def engine_kwargs(url: str) -> dict:
    """Fail fast on a database server that does not answer, rather than retry for minutes."""
    if url.startswith(("postgresql", "mysql")):
        return {"connect_args": {"connect_timeout": 5}}
    return {}


def wait_for_attr(study: optuna.Study, key: str, timeout: float = 30.0) -> Any:
    """A study attribute its creator sets right after creating it; wait for it if the study is new."""
    deadline = time.monotonic() + timeout
    while True:
        value = study.user_attrs.get(key)
        if value is not None or study.get_trials(deepcopy=False) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def parent_run(recorder: Recorder, study: optuna.Study, creator: bool, cfg: SweepAppConfig, data) -> str:
    """The study's one MLflow parent run: made by the study's creator, found by everyone else."""
    known = None if creator else wait_for_attr(study, "mlflow.parent_run_id")
    parent = recorder.call("open_parent_run", recorder.experiment_id.result(), known, study.study_name,
                           tracking.run_tags("sweep"), parent_params(cfg)).result()
    if parent != known:
        study.set_user_attr("mlflow.parent_run_id", parent)
        if data.sha256:  # read from a file: recorded once, here, not with every trial
            recorder.call("log_all", parent, tags={"bpexp.data_sha256": data.sha256}).result()
            recorder.call("log_files", parent, file_copy(cfg.data.path)).result()
    return parent


def parent_params(cfg: SweepAppConfig) -> dict[str, Any]:
    """The study's params: the fixed config, and the search space as one param per searched
    key (search.train.lr = "float [0.0001, 1] log"), never a base value no trial used."""
    params = tracking.flatten(config_tree(cfg))
    for name in cfg.sweep.search_space:
        for k in [k for k in params if k.startswith(f"sweep.search_space.{name}.")]:
            del params[k]
    for key, p in searched(cfg):
        params.pop(key, None)
        if p.type == "categorical":
            params[f"search.{key}"] = "categorical " + json.dumps(choices(p))
        else:
            params[f"search.{key}"] = f"{p.type} [{p.low:g}, {p.high:g}]" + (" log" if p.log else "") + (
                f" step {p.step:g}" if p.step else "")
    return params


def first_difference(a: dict, b: dict) -> tuple[str, Any, Any]:
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            return k, a.get(k), b.get(k)
    return "", None, None


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail trials left RUNNING by dead workers: by pid on this host, by heartbeat elsewhere."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("bpexp.worker")
        # Unclaimed: its worker died between asking for it and claiming it (milliseconds apart).
        orphan = worker is None and t.datetime_start and (now - t.datetime_start).total_seconds() > GRACE_S
        if orphan or (worker is not None and not worker_alive(worker)):
            tell(study, t.number, None, TrialState.FAIL)


def tell(study: optuna.Study, trial, value: Optional[float], state: TrialState) -> TrialState:
    """Tell a trial's result unless it is finished already; return the state it ends in.

    skip_if_finished alone is not enough with several workers: two of them may both see a dead
    worker's trial RUNNING and fail it together; the storage then refuses the second update.
    """
    try:
        return study.tell(trial, value, state=state, skip_if_finished=True).state
    except optuna.exceptions.UpdateFinishedTrialError:
        number = trial if isinstance(trial, int) else trial.number
        return study.get_trials(deepcopy=False)[number].state


def take_over(study: optuna.Study, recorder: Recorder, parent: str) -> None:
    """Clean up after dead workers: fail their RUNNING trials, settle their RUNNING child runs."""
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    states = {t.number: t.state.name for t in trials}
    workers = {t.user_attrs.get("bpexp.worker") for t in trials} - {None}
    recorder.call("settle_child_runs", parent, states, {w for w in workers if not worker_alive(w)}).result()


def worker_alive(worker: str) -> bool:
    """False only for a worker ("host:pid") of this host whose process is gone; a worker on
    another host counts as alive (Optuna's heartbeat deals with those)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class Heartbeat:
    """Marks this worker's running trials alive, so other workers don't fail them.

    Optuna beats only inside study.optimize(); with ask/tell a worker beats itself, through
    the storage's record_heartbeat and the trials' storage ids (private attributes, here only).
    """

    def __init__(self, study: optuna.Study):
        self.storage, self.trial_ids, self._stop = study._storage, [], threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def track(self, trials: list[optuna.Trial]) -> None:
        self.trial_ids = [t._trial_id for t in trials]
        for tid in self.trial_ids:
            self.storage.record_heartbeat(tid)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            for tid in list(self.trial_ids):
                try:
                    self.storage.record_heartbeat(tid)
                except Exception:  # a trial finished meanwhile; the next beat is soon enough
                    pass

    def close(self) -> None:
        self._stop.set()


def count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


# ----------------------------------------------------------------------------- one batch
def train_batch(cfg: SweepAppConfig, trials: list[optuna.Trial], configs: dict[int, TrainAppConfig],
                data) -> dict[int, list[MemberResult]]:
    """Train every seed of every trial as one population, pruning from inside the loop."""
    seeds = [cfg.train.seed + i for i in range(cfg.sweep.seeds)]
    members, owner = [], []
    for t in trials:
        for s in seeds:
            members.append(replace(member_of(configs[t.number]), seed=s))
            owner.append(t)
    pruned_trials: set[int] = set()

    def on_report(epoch: int, live, losses) -> list[int]:
        """Median loss of each trial's live seeds -> the pruner; return members to stop."""
        by_trial: dict[int, list[float]] = {}
        for i, loss in zip(live, losses):
            by_trial.setdefault(owner[i].number, []).append(float(loss))
        stop = set()
        for t in trials:
            if t.number in by_trial and t.number not in pruned_trials:
                t.report(statistics.median(by_trial[t.number]), epoch)
                if t.should_prune():
                    pruned_trials.add(t.number)
                    stop.add(t.number)
        return [i for i in live if owner[i].number in stop]

    # Each report is a write to the study's storage: only worth it when a pruner reads them.
    pruning = cfg.sweep.pruner != "none"
    results = train_population(members, data, cfg.train.epochs, log_every=cfg.train.log_every,
                               diverge_above=cfg.train.diverge_above, device=cfg.train.device,
                               report_every=cfg.sweep.report_every if pruning else 0,
                               on_report=on_report if pruning else None)
    by_trial: dict[int, list[MemberResult]] = {t.number: [] for t in trials}
    for t, r in zip(owner, results):
        by_trial[t.number].append(r)
    return by_trial


def record_batch(cfg, recorder: Recorder, parent_run_id: str, study_name: str, data, batch: "Batch") -> dict[int, Any]:
    """Record each trial as a child run, left RUNNING until its trial has been told."""
    runs = {}
    for t in batch.trials:
        outcome: Outcome = batch.outcomes[t.number]
        rec = run_record(config_tree(batch.configs[t.number]), batch.results[t.number], outcome, data,
                         cfg.tracking.log_plots, cfg.sweep.metric, with_data=False)  # a CSV: once, on the parent
        rec.tags["optuna.trial_state"] = optuna_state(outcome)[0].name
        # Created with the tags a resumed sweep needs to settle it, should this worker die.
        tags = {**tracking.run_tags("sweep"), "optuna.study_name": study_name, "optuna.trial_number": t.number,
                "bpexp.worker": WORKER}
        runs[t.number] = recorder.new_run(trial_name(cfg, t), tags, rec, parent_run_id, end_status=None)
    return runs


def trial_name(cfg: SweepAppConfig, trial) -> str:
    """A child run's name says what the trial tried: "t085 lr=0.246 hidden=4"."""
    parts = [f"t{trial.number:03d}"]
    for name, spec in cfg.sweep.search_space.items():
        v = trial.params.get(spec.key or name)
        parts.append(f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}")
    return " ".join(parts)


# ----------------------------------------------------------------------------- the sweep
def sweep(cfg: SweepAppConfig) -> float:
    """Run (or resume) the study until it has sweep.n_trials trained trials; return the best value."""
    check_device(cfg.train.device)
    check_search_space(cfg)
    uri = check_tracking_uri(cfg.tracking.uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, creator = open_study(cfg)
    with Recorder(uri, cfg.tracking.experiment) as recorder:
        data = dataset_from_config(cfg.data)
        parent = parent_run(recorder, study, creator, cfg, data)
        failpoint("parent-created")
        take_over(study, recorder, parent)
        heartbeat = Heartbeat(study)
        progress = _progress(cfg, study)
        try:
            run_trials(cfg, study, recorder, parent, data, heartbeat, progress)
        except BaseException as e:
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            recorder.call("end_run", parent, status, f"{type(e).__name__}: {e}").result()
            raise
        finally:
            heartbeat.close()
            if progress is not None:
                progress.close()
        take_over(study, recorder, parent)  # runs of a worker that died while this one worked
        summary = study_summary(study, cfg)
        recorder.call("record_study", parent, summary, cfg.sweep.register_as).result()
        recorder.call("end_run", parent, "FINISHED").result()
    print_summary(cfg, study, summary, parent, uri, recorder.experiment_id.result())
    return summary["best_value"]


def run_trials(cfg: SweepAppConfig, study: optuna.Study, recorder: Recorder, parent: str, data,
               heartbeat: Heartbeat, progress) -> None:
    """Ask, train, record, tell, a batch at a time, until the study has n_trials trained trials.

    Double-buffered: batch i+1 trains while the recorder process records batch i. A batch is
    told only after its child runs exist, so a COMPLETE trial always has its run; the sampler
    sees batch i's results one batch late (meanwhile TPE's constant liar treats them as running).
    """
    pending: Optional[Batch] = None
    batch: Optional[Batch] = None
    try:
        while True:
            done, running = trained(study), count(study, TrialState.RUNNING)
            k = min(batch_size(cfg), cfg.sweep.n_trials - done - running)
            batch = None
            if k > 0:
                with deferred_interrupts():  # a trial asked is a trial this batch knows of
                    batch = Batch(ask(cfg, study, k))
            if batch is not None and not batch.trials:
                batch = None
            if batch is not None:
                heartbeat.track([t for b in (pending, batch) if b for t in b.trials])
                failpoint("training")
                batch.configs = {t.number: trial_config(cfg, t.params) for t in batch.trials}
                batch.results = train_batch(cfg, batch.trials, batch.configs, data)
                batch.outcomes = {n: trial_outcome(rs, cfg.sweep.metric) for n, rs in batch.results.items()}
            if pending is not None:
                with deferred_interrupts():  # told and finished together, or neither
                    finish_batch(study, recorder, parent, pending, progress)
                    pending, finished = None, pending
            else:
                finished = None
            if batch is None:
                if finished is not None:
                    continue  # its pruned trials may leave the study short of n_trials
                if trained(study) >= cfg.sweep.n_trials:
                    return
                # The rest is running on other workers: wait, and take over if one of them dies.
                time.sleep(POLL_S)
                fail_stale_trials(study)
                continue
            with deferred_interrupts():  # every run submitted is a run this batch knows of
                batch.runs = record_batch(cfg, recorder, parent, study.study_name, data, batch)
            pending = batch
    except BaseException:
        in_flight = [b for b in (pending, batch) if b is not None]
        for t in (t for b in in_flight for t in b.trials):
            tell(study, t, None, TrialState.FAIL)
        run_ids = [f.result() for b in in_flight for f in b.runs.values()]
        recorder.call("end_runs", run_ids, "KILLED").result()
        raise


@dataclass
class Batch:
    trials: list
    configs: dict = field(default_factory=dict)  # trial number -> its TrainAppConfig
    results: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)  # trial number -> future of its child run id


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C until the block is done, so a step that must not be cut in two (asking a
    batch, recording it, telling it and ending its runs) is never half done. Python runs
    signal handlers in the main thread: this one notes the signal, and the block's end raises."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def finish_batch(study: optuna.Study, recorder: Recorder, parent: str, batch: Batch, progress) -> None:
    """Wait for the batch's child runs, tell Optuna the results, then finish the runs; log the
    parent's best_value at each trial that improves it (step = trial number)."""
    failpoint("recording")
    finished, killed, improved = [], [], []
    best = _best_value(study)
    for t in batch.trials:
        run_id = batch.runs[t.number].result()
        outcome: Outcome = batch.outcomes[t.number]
        state, value = optuna_state(outcome)
        for k, v in {**optuna_attrs(outcome), **recorder.run_links(run_id)}.items():
            t.set_user_attr(k, v)
        t.set_constraint(CONSTRAINT, 1.0 if outcome.verdict == DIVERGED else 0.0)  # TPE and GP read it
        told = tell(study, t, value, state)
        # Another worker may have failed it as stale meanwhile (a heartbeat missed under load):
        # Optuna's state is the record, so its run ends KILLED, never FINISHED for a failed trial.
        if told != state:
            killed.append(run_id)
            continue
        finished.append(run_id)
        if value is not None and (math.isnan(best) or better(study, value, best)):
            best = value
            improved.append(("best_value", value, t.number))
    failpoint("told")
    recorder.call("end_runs", finished, "FINISHED")
    if killed:
        recorder.call("end_runs", killed, "KILLED")
    if improved:
        recorder.call("log_all", parent, metrics=improved)
    if progress is not None:
        progress.update(sum(1 for o in batch.outcomes.values() if o.verdict != PRUNED))
        progress.set_postfix(best=f"{best:.3g}")


def better(study: optuna.Study, a: float, b: float) -> bool:
    return a < b if study.direction == optuna.study.StudyDirection.MINIMIZE else a > b


def ask(cfg: SweepAppConfig, study: optuna.Study, k: int) -> list[optuna.Trial]:
    """Ask for k trials and keep those within n_trials; fail the surplus at once.

    Workers sharing a study each ask for what they see missing, so together they may ask for
    more. Trial numbers are assigned atomically by the storage, which makes the rule exact: a
    trial is trained only if fewer than n_trials lower-numbered trials are trained or RUNNING.
    Then no study ever ends with more than n_trials trained trials.
    """
    asked = []
    with warnings.catch_warnings():  # our own Heartbeat class beats for ask/tell trials
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used", UserWarning)
        for _ in range(k):
            asked.append(study.ask())
            asked[-1].set_user_attr("bpexp.worker", WORKER)  # claimed at once (see fail_stale_trials)
    taken = sorted(t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING or counts(t))
    keep = []
    for t in asked:
        if bisect.bisect_left(taken, t.number) < cfg.sweep.n_trials:
            for key, p in searched(cfg):
                suggest(t, key, p)
            keep.append(t)
        else:
            t.set_user_attr("bpexp.surplus", True)  # asked by a worker that raced another; never trained
            tell(study, t, None, TrialState.FAIL)
    return keep


def batch_size(cfg: SweepAppConfig) -> int:
    """Automatic: trials whose seeds make a population of about 48 members, at least 8 trials.

    Measured on 2 cores (benchmarks/population.py): a 16-member population costs ~70 ms per
    member (per-operation overhead dominates), 48 members ~30 ms, 100 members ~20 ms; bigger
    batches give the sampler fewer rounds of feedback. 16 trials x 3 seeds (the default study)
    meets the quality bar (benchmarks/quality.py).
    """
    return cfg.sweep.batch_size or max(8, POPULATION // cfg.sweep.seeds)


POPULATION = 48


def _best_value(study: optuna.Study) -> float:
    """The best feasible value so far (Optuna's best_trial skips infeasible trials), or NaN."""
    try:
        return study.best_value
    except ValueError:
        return float("nan")


def counts(trial) -> bool:
    """Whether a trial counts towards sweep.n_trials: trained to an outcome (converged, partly
    diverged or diverged); pruned trials and trials that failed for other reasons come on top."""
    return verdict_of(trial) in (CONVERGED, PARTLY_DIVERGED, DIVERGED)


def trained(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


def _progress(cfg: SweepAppConfig, study: optuna.Study):
    if not cfg.sweep.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.sweep.n_trials, initial=min(trained(study), cfg.sweep.n_trials),
                desc=f"study {study.study_name}", unit="trial")


def study_summary(study: optuna.Study, cfg: SweepAppConfig) -> dict:
    """Plain data about the study for the parent run (built here, recorded by the recorder).
    Every trial's verdict is read back from Optuna, so workers and resumes agree on it."""
    trials = study.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        rows.append({"number": t.number, "state": t.state.name, "outcome": verdict_of(t) or "failed",
                     "value": t.value, "params": dict(t.params),
                     "diverged_seeds": t.user_attrs.get("bpexp.diverged_seeds", []),
                     "run_id": t.user_attrs.get("mlflow.run_id", "")})
    valued = [r for r in rows if r["outcome"] in (CONVERGED, PARTLY_DIVERGED)]  # Optuna's COMPLETE trials
    pick = min if cfg.sweep.direction == "minimize" else max
    best = pick(valued, key=lambda r: (r["value"], r["number"])) if valued else None  # as study.best_trial
    importances = {}
    if len(valued) >= 2:
        with warnings.catch_warnings():  # e.g. "importances will be equal" on tiny studies
            warnings.simplefilter("ignore", UserWarning)
            try:
                importances = optuna.importance.get_param_importances(study)
            except (RuntimeError, ValueError):  # e.g. a parameter with a single value so far
                pass
    keys = [k for k, _ in searched(cfg)]
    return {
        "study_name": study.study_name,
        "metric": cfg.sweep.metric,
        "direction": cfg.sweep.direction,
        "keys": keys,
        "trials": rows,
        "best_number": best["number"] if best else None,
        "best_value": best["value"] if best else float("nan"),
        "best_params": best["params"] if best else {},
        "best_config": config_tree(trial_config(cfg, best["params"])) if best else None,
        "importances": importances,
        "counts": {v: sum(1 for r in rows if r["outcome"] == v) for v in (CONVERGED, PARTLY_DIVERGED, DIVERGED,
                                                                          PRUNED, "failed")},
    }


def print_summary(cfg: SweepAppConfig, study: optuna.Study, summary: dict, parent: str, uri: str,
                  experiment_id: str) -> None:
    c = summary["counts"]
    storage = cfg.sweep.storage or storage_default()
    print(f"\nstudy '{study.study_name}': {sum(c[v] for v in (CONVERGED, PARTLY_DIVERGED, DIVERGED))} trained: "
          f"{c[CONVERGED]} converged, {c[PARTLY_DIVERGED]} partly diverged (a minority of seeds diverged), "
          f"{c[DIVERGED]} diverged (the median seed diverged); {c[PRUNED]} pruned, {c['failed']} failed")
    if summary["best_number"] is None:
        print("no trial has a value (every one diverged or was pruned): try a smaller train.lr range or more epochs")
    else:
        print(f"best trial #{summary['best_number']}: {cfg.sweep.metric} = {summary['best_value']:.6g} "
              f"(median over {cfg.sweep.seeds} seed{'s' if cfg.sweep.seeds > 1 else ''})")
        for k, v in summary["best_params"].items():
            print(f"  {k:<16} {v:.6g}" if isinstance(v, float) else f"  {k:<16} {v}")
    print(f"MLflow parent run {parent} in experiment '{cfg.tracking.experiment}'")
    print(f"open the MLflow UI:       {tracking.ui_command(uri)}")
    print(f"  the study's runs:       {tracking.experiment_url(uri, experiment_id)}")
    print(f"open optuna-dashboard:    optuna-dashboard {tracking.redact(storage)}")
