"""`bpexp sweep`: an Optuna study over the train config, trained a batch of trials at a time.

Reads top to bottom like an Optuna objective, but batched with ask/tell: ask the sampler for
a batch of trials (TPE's constant liar keeps a batch diverse), train all their seeds as one
population, report intermediate losses to the pruner from inside that training loop, record
every trial as an MLflow child run of the study's parent run, then tell Optuna the results.

Every trial's state lives in Optuna's storage, the source of truth when a sweep resumes:
- a child run is recorded (RUNNING) before its trial is told, and finished after, so a
  COMPLETE trial always has its run and a killed sweep leaves no FINISHED run for a failed trial;
- on start, trials left RUNNING by a dead worker are failed and their MLflow runs marked
  KILLED (bpexp/workers.py);
- the study remembers the config it was created with and refuses to mix in another one
  (bpexp/study.py). What a trial searches: bpexp/search_space.py; its verdict:
  bpexp/outcome.py; the study's summary: bpexp/study_summary.py.
"""
from __future__ import annotations

import bisect
import math
import statistics
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import optuna
from optuna.trial import TrialState

from bpexp import lr_units, study_record, tracking
from bpexp.config import ConfigError, SweepAppConfig, TrainAppConfig
from bpexp.data import dataset_from_config
from bpexp.interrupts import deferred_interrupts, interrupted
from bpexp.mirror import MAX_BATCH, Mirror
from bpexp.outcome import CONSTRAINT, PRUNED, Outcome, optuna_attrs, optuna_constraint, optuna_state, trial_outcome
from bpexp.population import MemberResult, memory_problem, train_population
from bpexp.recorder import Recorder
from bpexp.run_record import config_tree, member_of, run_record
from bpexp.search_space import blind_trials, check_search_space, searched, study_seeds, suggest, trial_config
from bpexp.study import open_study, parent_run
from bpexp.recheck import recheck_study
from bpexp.study_summary import print_summary, recheck_summary, study_summary
from bpexp.train import check_device, check_tracking_uri
from bpexp.liveness import WORKER
from bpexp.failpoints import failpoint
from bpexp.workers import POLL_S, Heartbeat, count, counts, fail_stale_trials, take_over, tell, trained


# ----------------------------------------------------------------------------- one batch
def train_batch(cfg: SweepAppConfig, trials: list[optuna.Trial], configs: dict[int, TrainAppConfig],
                data) -> dict[int, list[MemberResult]]:
    """Train every seed of every trial as one population, pruning from inside the loop."""
    seeds = study_seeds(cfg)
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
                               sharpness_every=cfg.train.sharpness_every,
                               diverge_above=cfg.train.diverge_above, device=cfg.train.device,
                               report_every=cfg.sweep.report_every if pruning else 0,
                               on_report=on_report if pruning else None)
    by_trial: dict[int, list[MemberResult]] = {t.number: [] for t in trials}
    for t, r in zip(owner, results):
        by_trial[t.number].append(r)
    return by_trial


def record_batch(cfg, recorder: Recorder, parent_run_id: str, study_name: str, data, batch: "Batch",
                 tags: dict) -> None:
    """Record each trial as a child run (batch.runs), left RUNNING until its trial has been told."""
    for t in batch.trials:
        if interrupted():
            return  # the rest have no run; the interrupt fails them
        outcome: Outcome = batch.outcomes[t.number]
        rec = run_record(config_tree(batch.configs[t.number]), batch.results[t.number], outcome, data,
                         cfg.tracking.log_plots, cfg.sweep.metric, with_data=False)  # a CSV: once, on the parent
        rec.tags["optuna.trial_state"] = optuna_state(outcome)[0].name
        if lr_units.SUGGESTION in t.user_attrs:  # the lr searched in units of the range test's
            rec.tags[lr_units.SUGGESTION] = f"{t.user_attrs[lr_units.SUGGESTION]:.6g}"
        # Created with the tags a resumed sweep needs to settle it, should this worker die.
        mine = {**tags, "optuna.study_name": study_name, "optuna.trial_number": t.number, "bpexp.worker": WORKER}
        batch.runs[t.number] = recorder.new_run(trial_name(cfg, t), mine, rec, parent_run_id, end_status=None)


def trial_name(cfg: SweepAppConfig, trial) -> str:
    """A child run's name says what the trial tried: "t085 lr=0.246 hidden=4"."""
    parts = [f"t{trial.number:03d}"]
    for name, spec in cfg.sweep.search_space.items():
        v = trial.params.get(spec.key or name)
        parts.append(f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}")
    return " ".join(parts)


# ----------------------------------------------------------------------------- the sweep
def sweep(cfg: SweepAppConfig, args: Sequence[str] = ()) -> float:
    """Run (or resume) the study until it has sweep.n_trials trained trials; return the best value."""
    check_device(cfg.train.device)
    check_search_space(cfg)
    check_searched_devices(cfg)
    uri = check_tracking_uri(cfg.tracking.uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = dataset_from_config(cfg.data)
    check_memory(cfg)
    study, creator = open_study(cfg, data.sha256)
    tags = tracking.run_tags("sweep", args)
    with Recorder(uri, cfg.tracking.experiment) as recorder:
        tested: dict = {}  # config -> the range test's lr, for an lr searched in its units (lr_units)
        if trained(study) < cfg.sweep.n_trials:  # while the recorder opens the store (~1 s here)
            lr_units.test_every_config(cfg, data, tested)
        parent = parent_run(recorder, study, creator, cfg, data, tags)
        failpoint("parent-created")
        take_over(study, recorder, parent)
        heartbeat = Heartbeat(study)
        progress = _progress(cfg, study)
        try:
            warm_ups = study_record.warm_ups(cfg.tracking.log_plots, cfg.tracking.log_model)
            run_trials(cfg, study, recorder, parent, data, heartbeat, progress, tags, tested, warm_ups)
            recorder.settle()  # every run ended, or the error that kept one from it
        except BaseException as e:
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            try:  # bounded: with the tracking server gone, the next sweep reopens it anyway
                recorder.call(tracking.end_run, parent, status, f"{type(e).__name__}: {e}").result(timeout=10)
            except Exception:
                pass
            raise
        finally:
            heartbeat.close()
            if progress is not None:
                progress.close()
        take_over(study, recorder, parent)  # runs of a worker that died while this one worked
        # The trials' summary, figures and best model are recorded while the best trials are
        # re-trained on fresh seeds (the recommendation), then the re-check's part.
        summary = study_summary(study, cfg)
        recorded = recorder.call(study_record.record_study, parent, summary, cfg.sweep.register_as,
                                 cfg.tracking.log_plots, cfg.tracking.log_model)
        recheck_study(cfg, study, data)
        summary.update(recheck_summary(study, cfg, summary["trials"]))
        recorder.call(study_record.record_recommendation, parent, summary).result()
        recorded.result()
        recorder.call(tracking.end_run, parent, "FINISHED").result()
    print_summary(cfg, study, summary, parent, uri, recorder.experiment_id.result())
    return summary["best_value"]


def run_trials(cfg: SweepAppConfig, study: optuna.Study, recorder: Recorder, parent: str, data,
               heartbeat: Heartbeat, progress, tags: dict, tested: dict, warm_ups: list) -> None:
    """Ask, train, record, tell, a batch at a time, until the study has n_trials trained trials.

    Double-buffered: batch i+1 trains while the recorder process records batch i. A batch is
    told only after its child runs exist, so a COMPLETE trial always has its run; the sampler
    sees batch i's results one batch late (meanwhile TPE's constant liar treats them as running).
    Except early in an automatic study (`batch_plan`): small batches, each told before the next
    is asked, so that the sampler learns from every trial from the start.

    `tested`: config -> the range test's lr (bpexp/lr_units.py), carried across batches;
    `warm_ups`: imports for the study's end, one step sent to the recorder after each batch.
    """
    pending: Optional[Batch] = None
    batch: Optional[Batch] = None
    mirror = Mirror(study) if cfg.sweep.sampler == "tpe" else None
    try:
        while True:
            done = trained(study)
            if pending is not None and not batch_plan(cfg, done).overlapped:
                with deferred_interrupts():  # as below: each trial told and its run finished together
                    finish_batch(study, recorder, parent, pending, progress)
                pending, done = None, trained(study)
            running = count(study, TrialState.RUNNING)
            k = min(batch_plan(cfg, done).trials, cfg.sweep.n_trials - done - running)
            batch = None
            if k > 0:
                batch = Batch([])
                with deferred_interrupts():  # a trial asked is a trial this batch knows of
                    ask(cfg, study, k, batch.trials, mirror)
            if batch is not None and not batch.trials:
                batch = None
            if batch is not None:
                heartbeat.track([t for b in (pending, batch) if b for t in b.trials])
                failpoint("training")
                lr_units.set_lrs(cfg, batch.trials, data, tested)
                batch.configs = {t.number: trial_config(cfg, t.params) for t in batch.trials}
                batch.results = train_batch(cfg, batch.trials, batch.configs, data)
                batch.outcomes = {n: trial_outcome(rs, cfg.sweep.metric) for n, rs in batch.results.items()}
            finished = None
            if pending is not None:
                with deferred_interrupts():  # each trial told and its run finished together, or neither
                    finish_batch(study, recorder, parent, pending, progress)
                finished, pending = pending, None
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
                record_batch(cfg, recorder, parent, study.study_name, data, batch, tags)
            if warm_ups:  # recorded after this batch's runs, while the next batch trains
                recorder.later(study_record.warm_up, warm_ups.pop(0))
            pending = batch
    except BaseException:
        settle_in_flight(study, recorder, [b for b in (pending, batch) if b is not None])
        raise


CLEANUP_S = 20.0  # the longest a failing or interrupted sweep waits to settle its trials' runs


def settle_in_flight(study: optuna.Study, recorder: Recorder, batches: list["Batch"]) -> None:
    """After an error or an interrupt: fail the trials still RUNNING, end each run as its trial
    ended (FINISHED if told COMPLETE/PRUNED, else KILLED). Every step is best effort and
    bounded: with the storage or the tracking server gone, what cannot be settled now stays
    RUNNING, and the next sweep on the study settles it (workers.take_over), never the wrong way."""
    ends: dict[str, list[str]] = {"FINISHED": [], "KILLED": []}
    deadline = time.monotonic() + CLEANUP_S
    left = lambda: max(0.0, deadline - time.monotonic())  # noqa: E731
    for b in batches:
        for t in b.trials:
            try:
                state = tell(study, t, None, TrialState.FAIL)
            except Exception:
                continue  # storage gone: the trial's state is unknown; leave its run to a resume
            future = b.runs.get(t.number)
            if future is None:
                continue
            try:
                run_id = future.result(timeout=left())
            except Exception:
                continue  # its run was never created, or the recorder is stuck
            ends["FINISHED" if state in (TrialState.COMPLETE, TrialState.PRUNED) else "KILLED"].append(run_id)
    for status, run_ids in ends.items():
        if run_ids:
            try:
                recorder.call(tracking.end_runs, run_ids, status).result(timeout=left())
            except Exception:
                pass  # RUNNING until the next sweep on this study settles them by their trials


@dataclass
class Batch:
    trials: list
    configs: dict = field(default_factory=dict)  # trial number -> its TrainAppConfig
    results: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)  # trial number -> future of its child run id


def finish_batch(study: optuna.Study, recorder: Recorder, parent: str, batch: Batch, progress) -> None:
    """Wait for the batch's child runs, tell Optuna the results, then finish the runs; log the
    parent's best_value at each trial that improves it (step = trial number)."""
    failpoint("recording")
    finished, killed, improved = [], [], []
    best = _best_value(study)
    for t in batch.trials:
        if interrupted():
            break  # the rest are failed by the interrupt, their runs KILLED
        run_id = batch.runs[t.number].result()
        outcome: Outcome = batch.outcomes[t.number]
        state, value = optuna_state(outcome)
        for k, v in {**optuna_attrs(outcome), **recorder.run_links(run_id)}.items():
            t.set_user_attr(k, v)
        t.set_constraint(CONSTRAINT, optuna_constraint(outcome))  # TPE and GP read it
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
    recorder.later(tracking.end_runs, finished, "FINISHED")  # errors surface at recorder.settle()
    if killed:
        recorder.later(tracking.end_runs, killed, "KILLED")
    if improved:
        recorder.later(tracking.log_all, parent, metrics=improved)
    if progress is not None:
        progress.update(sum(1 for o in batch.outcomes.values() if o.verdict != PRUNED))
        progress.set_postfix(best=f"{best:.3g}")


def better(study: optuna.Study, a: float, b: float) -> bool:
    return a < b if study.direction == optuna.study.StudyDirection.MINIMIZE else a > b


def ask(cfg: SweepAppConfig, study: optuna.Study, k: int, into: list, mirror: Optional[Mirror] = None) -> None:
    """Ask for k trials into `into`, keep those within n_trials; fail the surplus at once.
    An interrupt stops the asking: what was asked is in `into` for the interrupt to fail.
    With a mirror (TPE), their params are drawn there (bpexp/mirror.py).

    Workers sharing a study each ask for what they see missing, so together they may ask for
    more. Trial numbers are assigned atomically by the storage, which makes the rule exact: a
    trial is trained only if fewer than n_trials lower-numbered trials are trained or RUNNING.
    Then no study ever ends with more than n_trials trained trials.
    """
    asked = into
    copies = mirror.ask(k, interrupted) if mirror is not None and k <= MAX_BATCH and mirror.sync() else None
    with warnings.catch_warnings():  # our own Heartbeat class beats for ask/tell trials
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used", UserWarning)
        for i in range(k if copies is None else len(copies)):  # fewer copies: an interrupt came
            if interrupted():
                return
            if copies is not None:  # drawn in the mirror, created here with its params and claimed
                asked.append(mirror.draw(copies[i], lambda t: [suggest(t, key, p) for key, p in searched(cfg)],
                                         {"bpexp.worker": WORKER}))
                continue
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
    into[:] = keep


def check_searched_devices(cfg: SweepAppConfig) -> None:
    """A searched train.device must exist too: a trial never records a device it did not run on."""
    for name, spec in cfg.sweep.search_space.items():
        if (spec.key or name) == "train.device":
            for v in spec.choices or []:
                check_device(str(v), f"sweep.search_space.{name}")


def check_memory(cfg: SweepAppConfig) -> None:
    """Refuse, before training, a batch whose curves cannot fit in memory (train.epochs=1e9)."""
    members = max(batch_plan(cfg, n).trials for n in (0, cfg.sweep.sequential_trials)) * cfg.sweep.seeds
    problem = memory_problem(cfg.train.epochs, members, cfg.sweep.seeds)
    if problem:
        small = memory_problem(cfg.train.epochs, min(members, POPULATION), cfg.sweep.seeds) is None
        key, value = ("sweep.batch_size", cfg.sweep.batch_size) if small else ("train.epochs", cfg.train.epochs)
        raise ConfigError(key, value, problem)


@dataclass(frozen=True)
class BatchPlan:
    trials: int  # trials asked and trained together as one population
    overlapped: bool  # trained while the batch before is recorded, so told one batch late


def batch_plan(cfg: SweepAppConfig, trained_trials: int) -> BatchPlan:
    """How the next batch is run, once the study has `trained_trials` trained trials.

    sweep.batch_size=0 (automatic): SEQUENTIAL_BATCH trials at a time, each batch told before
    the next is asked, for the first sweep.sequential_trials trials; then trials whose seeds make
    a population of about POPULATION networks (at least 8 trials), overlapped. Why: told one
    batch of 16 late, TPE's first 32 trials are random search's (it starts from a random
    sampler); small batches told at once let it learn from the start (benchmarks/
    sample_efficiency.py, README "How many trials"). The sampler's random start-up trials
    (`blind_trials`) read no result, so they are one batch: the same trials, trained together
    (TPE's 8: one batch of 8 instead of two of 4, ~1.2 s less). A sampler that never reads a
    result (random, grid) has nothing to learn early: overlapped batches from the start.
    Bigger populations train faster per member (benchmarks/population.py, 2 cores: 16 members
    ~70 ms each, 48 ~30 ms, 100 ~20 ms), and overlapping hides the training behind the
    recording. A set sweep.batch_size: that many trials, overlapped from the first batch."""
    if cfg.sweep.batch_size:
        return BatchPlan(cfg.sweep.batch_size, True)
    blind = blind_trials(cfg)
    if blind < math.inf and trained_trials < cfg.sweep.sequential_trials:
        first = min(int(blind), cfg.sweep.sequential_trials)  # the start-up trials: one batch
        return BatchPlan(max(SEQUENTIAL_BATCH, first - trained_trials), False)
    return BatchPlan(max(8, POPULATION // cfg.sweep.seeds), True)


SEQUENTIAL_BATCH = 4
POPULATION = 48


def _best_value(study: optuna.Study) -> float:
    """The best feasible value so far (Optuna's best_trial skips infeasible trials), or NaN."""
    try:
        return study.best_value
    except ValueError:
        return float("nan")


def _progress(cfg: SweepAppConfig, study: optuna.Study):
    if not cfg.sweep.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.sweep.n_trials, initial=min(trained(study), cfg.sweep.n_trials),
                desc=f"study {study.study_name}", unit="trial")


