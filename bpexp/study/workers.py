"""Many workers on one study: each claims the trials it asks for and marks them alive; the
next worker fails what a dead one left RUNNING (by pid on this host, by Optuna's heartbeat
elsewhere) and settles its MLflow runs.
"""
from __future__ import annotations

import datetime
import threading
import time
import warnings
from typing import Optional

import optuna
from optuna.trial import TrialState

from bpexp.recording import study_record
from bpexp.runtime import interrupts
from bpexp.runtime.liveness import worker_alive
from bpexp.results.outcome import TRAINED, verdict_of
from bpexp.recording.recorder import Recorder
from bpexp import names


POLL_S = 2.0  # how often an idle worker checks on the trials other workers run


HEARTBEAT_S = 20  # how often a worker marks its trials alive in the storage


GRACE_S = 60  # a RUNNING trial without a heartbeat for this long is failed by the next worker


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail trials left RUNNING by dead workers: by pid on this host, by heartbeat elsewhere."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(names.WORKER)
        # Unclaimed: its worker died between asking for it and claiming it (milliseconds apart).
        orphan = worker is None and t.datetime_start and (now - t.datetime_start).total_seconds() > GRACE_S
        if orphan or (worker is not None and not worker_alive(worker)):
            if names.OUTCOME in t.user_attrs:  # killed between its verdict and its tell: it says "failed", as its state
                try:
                    study._storage.set_trial_user_attr(t._trial_id, names.OUTCOME, "failed")
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # another worker failed it meanwhile
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
    workers = {t.user_attrs.get(names.WORKER) for t in trials} - {None}
    recorder.call(study_record.settle_child_runs, parent, states, {w for w in workers if not worker_alive(w)}).result()


STOPPED_AFTER_S = 45  # a beat without an answer this long: the database server stopped answering


class Heartbeat:
    """Marks this worker's running trials alive, so other workers don't fail them, and watches
    the database while doing so.

    Optuna beats only inside study.optimize(); with ask/tell a worker beats itself, through
    the storage's record_heartbeat and the trials' storage ids (private attributes, here only);
    with no trial running, a beat reads the study's attributes.

    The watch: a database server process that is stopped (SIGSTOP, a frozen VM) still has its
    kernel acknowledge every packet, so no client-side TCP bound ends a wait on it and its own
    statement timeout does not run: a beat still waiting after STOPPED_AFTER_S, or two beats in
    a row whose connection timed out, stop the main thread wherever it waits
    (interrupts.stop_main): one line, exit 1, the resume settles what is left RUNNING. Watched
    on a database server only (`watch`): a sqlite file has no server to stop, and a beat there
    may wait on another worker's lock.
    """

    def __init__(self, study: optuna.Study, watch: bool = True):
        self.storage, self.trial_ids, self._stop = study._storage, [], threading.Event()
        self.study_id, self.watch = study._study_id, watch
        self._since: Optional[float] = None  # when the beat under way began
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        if watch:
            threading.Thread(target=self._watch_beats, daemon=True).start()

    def track(self, trials: list[optuna.Trial]) -> None:
        self.trial_ids = [t._trial_id for t in trials]
        for tid in self.trial_ids:
            self.storage.record_heartbeat(tid)

    def _beat(self) -> None:
        timeouts = 0
        while not self._stop.wait(HEARTBEAT_S):
            self._since = time.monotonic()
            try:
                timeouts = 0 if self._beat_once() else timeouts + 1
            finally:
                self._since = None
            if timeouts >= 2 and self.watch:
                self._stopped(f"two heartbeats {HEARTBEAT_S} s apart could not connect")

    def _beat_once(self) -> bool:
        """One beat; False if the server did not answer (a connection that timed out)."""
        for tid in list(self.trial_ids) or [None]:
            try:
                if tid is None:
                    self.storage.get_study_user_attrs(self.study_id)
                else:
                    self.storage.record_heartbeat(tid)
            except Exception as e:  # a trial finished meanwhile; the next beat is soon enough
                if no_answer(e):
                    return False
        return True

    def _watch_beats(self) -> None:
        while not self._stop.wait(min(5.0, STOPPED_AFTER_S / 3)):
            since = self._since
            if since is not None and time.monotonic() - since > STOPPED_AFTER_S:
                self._stopped(f"a heartbeat got no answer in {STOPPED_AFTER_S} s")

    def _stopped(self, why: str) -> None:
        """The database server stopped answering: stop beating and watching, and stop the main thread."""
        if not self._stop.is_set():
            self._stop.set()
            interrupts.stop_main(f"the database server stopped answering ({why})")

    def close(self) -> None:
        self._stop.set()


def no_answer(e: BaseException) -> bool:
    """Whether a storage error says the server did not answer (not that it answered no)."""
    text = f"{e} {e.__cause__ or ''}".lower()
    return "timeout expired" in text or "timed out" in text


def count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def counts(trial) -> bool:
    """Whether a trial counts towards sweep.n_trials: trained to an outcome (converged, partly
    diverged, not fit or diverged); pruned trials and trials that failed for other reasons come on top."""
    return verdict_of(trial) in TRAINED


def trained(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))
