"""One worker's part of a study, batch by batch: ask, train, record, tell.

Reads top to bottom like an Optuna objective, but batched with ask/tell: ask the sampler for a
batch of trials (TPE's constant liar keeps a batch diverse), train all their seeds as one
population, report intermediate losses to the pruner from inside that training loop, record
every trial as an MLflow child run of the study's parent run, then tell Optuna the results.

Every trial's state lives in Optuna's storage, the source of truth when a sweep resumes:
- a child run is recorded (RUNNING) before its trial is told, and finished after, so a
  COMPLETE trial always has its run and a killed sweep leaves no FINISHED run for a failed trial;
- trials left RUNNING by a dead worker are failed by the next one (bpexp/study/workers.py).

`bpexp sweep` runs a Session with a `Recording` (the recorder process, the parent run); the
benchmarks run the very same loop without one (benchmarks/sample_efficiency.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import optuna
from optuna.trial import TrialState

from bpexp import names
from bpexp.config.schema import SweepAppConfig
from bpexp.recording import study_record, tracking
from bpexp.recording.recorder import Recorder
from bpexp.recording.run_record import config_tree, run_record
from bpexp.results.outcome import (CONSTRAINT, PRUNED, Outcome, optuna_attrs, optuna_constraint, optuna_state,
                                   trial_outcome)
from bpexp.runtime.failpoints import failpoint
from bpexp.runtime.failures import disk_full, unreachable
from bpexp.runtime.interrupts import StepTimeout, deferred_interrupts, interrupted, within
from bpexp.runtime.liveness import THIS_WORKER
from bpexp.study import lr_units
from bpexp.study.batches import Batch, BatchPlan, ask, batch_plan, train_batch, trial_name
from bpexp.study.mirror import Mirror
from bpexp.study.search_space import blind_trials, trial_config
from bpexp.study.workers import POLL_S, Heartbeat, count, fail_stale_trials, tell, trained
from bpexp.training.data import constant_loss


@dataclass
class Recording:
    """Where a session records its trials: the recorder process, the study's parent run, and
    the tags every child run starts with."""

    recorder: Recorder
    parent: str
    tags: dict
    warm_ups: list = field(default_factory=list)  # imports for the study's end, one step after each batch


CLEANUP_S = 10.0  # the longest a failing or interrupted sweep waits to settle its trials' runs
# A write refused while settling is tried again: on a full disk a sqlite write that failed rolls
# back and frees its journal, so the next small write (a trial's state, a run's end) often fits
# (without it, 1 in 6 real full disks left a trial and its run RUNNING for the resume).
SETTLE_TRIES, SETTLE_PAUSE_S = 3, 0.3


# ----------------------------------------------------------------------------- the session
class Session:
    """Runs the study's trials until it has sweep.n_trials trained trials (`run`).

    Double-buffered: batch i+1 trains while the recorder process records batch i. A batch is
    told only after its child runs exist, so a COMPLETE trial always has its run; the sampler
    sees batch i's results one batch late (meanwhile TPE's constant liar treats them as running).
    Except early in an automatic study (`batch_plan`): small batches, each told before the next
    is asked, so that the sampler learns from every trial from the start.
    """

    def __init__(self, cfg: SweepAppConfig, study: optuna.Study, data, recording: Optional[Recording] = None,
                 heartbeat: Optional[Heartbeat] = None, progress=None, tested: Optional[dict] = None):
        self.cfg, self.study, self.data = cfg, study, data
        self.recording, self.heartbeat, self.progress = recording, heartbeat, progress
        self.tested = {} if tested is None else tested  # config -> the range test's lr (lr_units), across batches
        self.mirror = Mirror(study) if cfg.sweep.sampler == "tpe" else None
        self.blind = blind_trials(cfg.sweep.sampler)

    def plan(self, trained_trials: int) -> BatchPlan:
        return batch_plan(self.cfg.sweep, self.blind, trained_trials)

    def run(self) -> None:
        n_trials, study = self.cfg.sweep.n_trials, self.study
        pending: Optional[Batch] = None
        batch: Optional[Batch] = None
        try:
            while True:
                done = trained(study)
                if pending is not None and not self.plan(done).overlapped:
                    with deferred_interrupts():  # as below: each trial told and its run finished together
                        self.tell(pending)
                    pending, done = None, trained(study)
                running = count(study, TrialState.RUNNING)
                k = min(self.plan(done).trials, n_trials - done - running)
                batch = None
                if k > 0:
                    batch = Batch([])
                    with deferred_interrupts():  # a trial asked is a trial this batch knows of
                        ask(study, self.cfg.sweep.search_space, n_trials, k, batch.trials, self.mirror)
                if batch is not None and not batch.trials:
                    batch = None
                if batch is not None:
                    if self.heartbeat is not None:
                        self.heartbeat.track([t for b in (pending, batch) if b for t in b.trials])
                    failpoint("training")
                    self.train(batch)
                finished = None
                if pending is not None:
                    with deferred_interrupts():  # each trial told and its run finished together, or neither
                        self.tell(pending)
                    finished, pending = pending, None
                if batch is None:
                    if finished is not None:
                        continue  # its pruned trials may leave the study short of n_trials
                    if trained(study) >= n_trials:
                        return
                    # The rest is running on other workers: wait, and take over if one of them dies.
                    time.sleep(POLL_S)
                    fail_stale_trials(study)
                    continue
                with deferred_interrupts():  # every run submitted is a run this batch knows of
                    self.record(batch)
                self.warm_up()
                pending = batch
        except BaseException as e:
            # A tracking server that stopped answering: every wait on it would take MLflow's
            # whole retry bound again (~33 s each); its runs are settled by the resume instead.
            self.settle([b for b in (pending, batch) if b is not None], mlflow_answers=not unreachable(e))
            raise

    # ------------------------------------------------------------------ train
    def train(self, batch: Batch) -> None:
        """Each trial's lr (in units of its range test, lr_units), config, seeds' results, verdict."""
        cfg = self.cfg
        lr_units.set_lrs(cfg, batch.trials, self.data, self.tested)
        batch.configs = {t.number: trial_config(cfg, t.params) for t in batch.trials}
        batch.results = train_batch(cfg, batch.trials, batch.configs, self.data)
        constant = constant_loss(self.data, str(cfg.sweep.metric))
        batch.outcomes = {n: trial_outcome(rs, cfg.sweep.metric, constant) for n, rs in batch.results.items()}

    # ------------------------------------------------------------------ record
    def record(self, batch: Batch) -> None:
        """Record each trial as a child run (batch.runs), left RUNNING until its trial has been told."""
        if self.recording is None:
            return
        rec, cfg = self.recording, self.cfg
        for t in batch.trials:
            if interrupted():
                return  # the rest have no run; the interrupt fails them
            outcome: Outcome = batch.outcomes[t.number]
            run = run_record(config_tree(batch.configs[t.number]), batch.results[t.number], outcome, self.data,
                             cfg.tracking.log_plots, cfg.sweep.metric, with_data=False)  # a CSV: once, on the parent
            run.tags[names.TRIAL_STATE] = optuna_state(outcome)[0].name
            if names.SUGGESTED_LR in t.user_attrs:  # the lr searched in units of the range test's
                run.tags[names.SUGGESTED_LR] = f"{t.user_attrs[names.SUGGESTED_LR]:.6g}"
            if names.NEIGHBOUR_OF in t.user_attrs:  # tried at the study's end, next to a best config
                run.tags[names.NEIGHBOUR_OF] = str(t.user_attrs[names.NEIGHBOUR_OF])
            # Created with the tags a resumed sweep needs to settle it, should this worker die.
            mine = {**rec.tags, names.STUDY_NAME: self.study.study_name, names.TRIAL_NUMBER: t.number,
                    names.WORKER: THIS_WORKER}
            batch.runs[t.number] = rec.recorder.new_run(trial_name(cfg.sweep.search_space, t), mine, run, rec.parent, end_status=None)

    def warm_up(self) -> None:
        """One step of the imports the study's end needs, sent after a batch's runs: the recorder
        imports while the next batch trains (study_record.warm_ups)."""
        if self.recording is not None and self.recording.warm_ups:
            self.recording.recorder.later(study_record.warm_up, self.recording.warm_ups.pop(0))

    # ------------------------------------------------------------------ tell
    def tell(self, batch: Batch) -> None:
        """Wait for the batch's child runs, tell Optuna the results, then finish the runs; log the
        parent's best_value at each trial that improves it (step = trial number)."""
        failpoint("recording")
        study, rec = self.study, self.recording
        finished, killed, improved = [], [], []
        best = _best_value(study)
        for t in batch.trials:
            if interrupted():
                break  # the rest are failed by the interrupt, their runs KILLED
            run_id = batch.runs[t.number].result() if rec is not None else None
            outcome: Outcome = batch.outcomes[t.number]
            state, value = optuna_state(outcome)
            links = rec.recorder.run_links(run_id) if rec is not None else {}
            try:
                for k, v in {**optuna_attrs(outcome), **links}.items():
                    t.set_user_attr(k, v)
                t.set_constraint(CONSTRAINT, optuna_constraint(outcome))  # TPE and GP read it
                told = tell(study, t, value, state)
            except optuna.exceptions.UpdateFinishedTrialError:
                # This worker was frozen (SIGSTOP, a paused VM) past the heartbeat's grace: another
                # worker failed the trial as stale and may have finished the study. Not this
                # worker's error: its run ends KILLED as its trial did, and the study goes on.
                told = TrialState.FAIL
            # Another worker may have failed it as stale meanwhile (a heartbeat missed under load):
            # Optuna's state is the record, so its run ends KILLED, never FINISHED for a failed trial.
            if told != state:
                killed.append(run_id)
                continue
            finished.append(run_id)
            if value is not None and (math.isnan(best) or value < best):
                best = value
                improved.append(("best_value", value, t.number))
        failpoint("told")
        if rec is not None:
            rec.recorder.later(tracking.end_runs, finished, "FINISHED")  # errors surface at recorder.settle()
            if killed:
                rec.recorder.later(tracking.end_failed_trial_runs, killed, "another worker failed its trial as stale")
            if improved:
                rec.recorder.later(tracking.log_all, rec.parent, metrics=improved)
        if self.progress is not None:
            self.progress.update(sum(1 for o in batch.outcomes.values() if o.verdict != PRUNED))
            self.progress.set_postfix(best=f"{best:.3g}")

    # ------------------------------------------------------------------ settle
    def settle(self, batches: list[Batch], mlflow_answers: bool = True) -> None:
        """After an error or an interrupt: fail the trials still RUNNING, end each run as its trial
        ended (FINISHED if told COMPLETE/PRUNED, else KILLED). Every step is best effort and
        bounded: with the storage or the tracking server gone, what cannot be settled now stays
        RUNNING, and the next sweep on the study settles it (workers.take_over), never the wrong way."""
        ends: dict[str, list[str]] = {"FINISHED": [], "KILLED": []}
        deadline = time.monotonic() + CLEANUP_S
        left = lambda: max(0.0, deadline - time.monotonic())  # noqa: E731
        todo = [(b, t) for b in batches for t in b.trials]
        try:
            # Bounded as a whole: with the database stopped (no answer, no error), each tell
            # would wait for ever; what is left RUNNING here the resume settles.
            with within(CLEANUP_S):
                for attempt in range(SETTLE_TRIES):
                    if attempt:  # a full disk: the write that failed rolled back, freeing its journal
                        time.sleep(SETTLE_PAUSE_S)
                    todo = [(b, t) for b, t in todo if not self._settle_trial(b, t, ends, mlflow_answers, left)]
                    if not todo:
                        break
        except StepTimeout:
            pass
        for status, run_ids in ends.items():
            if run_ids and self.recording is not None:
                end = ((tracking.end_failed_trial_runs, run_ids, "the sweep stopped before its trial was told")
                       if status == "KILLED" else (tracking.end_runs, run_ids, status))
                for attempt in range(SETTLE_TRIES):
                    try:
                        self.recording.recorder.call(*end).result(timeout=left())
                        break
                    except Exception as e:  # RUNNING until the next sweep on this study settles them by their trials
                        if not disk_full(e) or left() < SETTLE_PAUSE_S:
                            break
                        time.sleep(SETTLE_PAUSE_S)

    def _settle_trial(self, b: Batch, t: optuna.Trial, ends: dict[str, list[str]], mlflow_answers: bool,
                      left) -> bool:
        """Fail one trial if it still runs, and note how its run ends; False: a full disk refused
        the write (try again), True: settled, or nothing more to do for it now."""
        try:
            # A trial failed here may carry the verdict it was about to be told
            # with (attributes are set first): it says "failed", as its state does.
            t.set_user_attr(names.OUTCOME, "failed")
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # told already: finished, it keeps its verdict
        except Exception as e:  # the storage is gone, or the disk full
            if disk_full(e):  # failed now, it would keep the verdict (seen once): try again
                return False
        try:
            state = tell(self.study, t, None, TrialState.FAIL)
        except Exception as e:  # storage gone: the trial's state is unknown; leave its run to a resume
            return not disk_full(e)
        future = b.runs.get(t.number)
        if future is None or not mlflow_answers:
            return True
        try:
            run_id = future.result(timeout=left())
        except Exception:
            return True  # its run was never created, or the recorder is stuck
        ends["FINISHED" if state in (TrialState.COMPLETE, TrialState.PRUNED) else "KILLED"].append(run_id)
        return True


def _best_value(study: optuna.Study) -> float:
    """The best feasible value so far (Optuna's best_trial skips infeasible trials), or NaN."""
    try:
        return study.best_value
    except ValueError:
        return float("nan")
