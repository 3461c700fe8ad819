"""A separate process that does all MLflow work, and draws the study's figures.

Importing MLflow and opening its store costs about 2.5 s, matplotlib 0.6 s, and each
recorded run tens of milliseconds of database writes and figure rendering. None of that
needs torch or the training loop, so it runs in a process of its own, started first: it
imports and connects while the main process imports torch and trains, and records one
batch of trials while the next one trains. This module does not import torch, so the
recorder process never pays for it.

The main process talks to it through `Recorder`, whose methods return futures; an exception
raised in the recorder comes back through `.result()`.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import time
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable, Iterator, Optional

from bpexp.runtime import failures, liveness, redaction, stores, ui_links
from bpexp.recording import tracking
from bpexp import names

# State of the recorder process (set by _connect, used by the task functions below).
_client = None
_experiment_id: Optional[str] = None
_connect_error: Optional[BaseException] = None  # why the store could not be opened


@dataclass
class RunRecord:
    """Everything to record in one run; plain data (no torch) so it pickles cheaply."""

    params: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)  # (key, value, step)
    tags: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)  # artifact path -> bytes | str
    dataset: Optional[dict] = None  # the data it trained on, as an MLflow dataset input (tracking.log_dataset)


def _init(sql_store: bool = True, run_tags: bool = True) -> None:
    # Ctrl-C (and SIGTERM, which Slurm and systemd send to every process of a job) reach this
    # process too; the main process decides what a run becomes, and this one carries it out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    liveness.die_with_parent()
    # Every task is finished and committed before the pool lets this process go, so skip the
    # interpreter's teardown (about 0.8 s with MLflow loaded, and the main process waits for it).
    atexit.register(os._exit, 0)
    tracking.configure_mlflow()  # a recorder works in the background
    # Pay for MLflow's imports now, while the main process is busy with its own (torch): the
    # client, the SQL store's module (~0.8 s more, on the connection's path otherwise) and the
    # tags every run carries (git's commit of the code: ~0.3 s through GitPython; run_tags:
    # False for a reader, which records no run). sql_store: prestart's guess that the store is a
    # database, not a tracking server (whose client needs no SQL store; a wrong guess costs
    # ~0.8 s of imports in the background).
    import_module("mlflow.tracking")
    if sql_store:
        import_module("mlflow.store.tracking.sqlalchemy_store")
    if run_tags:
        tracking.context_tags()


def _connect(uri: str, experiment: str, cwd: str) -> str:
    """Open the store (created whole if new), find the experiment, and settle the runs that
    processes of this host left RUNNING when they died. Works in the command's folder (a kept
    recorder may have been started by an earlier command elsewhere): MLflow puts the Default
    experiment's artifacts under ./mlruns of it."""
    global _client, _experiment_id, _connect_error, _unreachable
    _client, _connect_error, _unreachable = None, None, None  # a multirun's jobs: each connects anew
    try:
        os.chdir(cwd)
        uri = stores.use_credentials(uri)  # http://user:pass@host: MLflow reads them from the environment
        _client, _experiment_id = tracking.open_store(uri, experiment)
    except BaseException as e:
        _connect_error = e
        raise
    tracking.settle_dead_runs(_client, _experiment_id)
    return _experiment_id


def _connected():
    if _client is None:  # every later task fails with the reason the store could not be opened
        raise _connect_error or RuntimeError("the recorder is not connected")
    if _unreachable is not None and time.monotonic() - _unreachable[0] < FAIL_FAST_S:
        raise _unreachable[1]
    return _client


# When a tracking server stops answering, each request fails only after MLflow's bounded
# retries (seconds). The tasks queued behind it (a batch's runs) then fail at once, for a
# while, instead of one after another: the sweep stops in seconds, and its resume settles them.
FAIL_FAST_S = 30.0
_unreachable: Optional[tuple[float, BaseException]] = None


def _noting_unreachable(fn: Callable) -> Callable:
    def task(*args, **kwargs):
        global _unreachable
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if failures.unreachable(e):
                _unreachable = (time.monotonic(), e)
            raise
    task.__name__ = task.__qualname__ = fn.__name__
    return task


@_noting_unreachable
def _call(fn: Callable, *args, **kwargs):
    """Run fn(client, ...) in the recorder process (fn is pickled by reference: its module
    and name)."""
    return fn(_connected(), *args, **kwargs)


@_noting_unreachable
def _start_run(name: str, tags: dict, parent_run_id: Optional[str], start_time: Optional[int]) -> str:
    return tracking.start_run(_connected(), _experiment_id, name, tags, parent_run_id, start_time)


@_noting_unreachable
def _new_run(name: str, tags: dict, parent_run_id: Optional[str], start_time: int, record: RunRecord,
             end_status: Optional[str]) -> str:
    run_id = _start_run(name, tags, parent_run_id, start_time)
    try:
        _record(run_id, record, end_status)
    except BaseException as e:  # half recorded: say so on the run rather than leave it RUNNING
        if failures.unreachable(e):  # not on a server that stopped answering: another ~33 s wait; a resume settles it
            raise
        try:
            reason = f"recording failed: {type(e).__name__}: {e}"
            if names.TRIAL_NUMBER in tags:  # the sweep fails its trial (Session.settle): so do its tags
                tracking.end_failed_trial_runs(_client, [run_id], reason, "FAILED")
            else:
                tracking.end_run(_client, run_id, "FAILED", reason)
        except Exception:
            pass
        raise
    return run_id


@_noting_unreachable
def _record(run_id: str, record: RunRecord, end_status: Optional[str]) -> None:
    tracking.log_all(_client, run_id, record.params, record.metrics, record.tags)
    if record.dataset:
        tracking.log_dataset(_client, run_id, record.dataset)
    if record.files:
        tracking.log_files(_client, run_id, record.files)
    if end_status:
        _client.set_terminated(run_id, end_status)


def _ready() -> None:
    """A no-op task: submitting it makes the pool start its process."""


def _process(uri: str, run_tags: bool) -> ProcessPoolExecutor:
    """A pool of one process, spawned (a fork would copy this process's threads and locks),
    that imports MLflow as _init says for a store at `uri`."""
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                               initargs=(not stores.is_tracking_server(uri), run_tags))


_prestarted: Optional[ProcessPoolExecutor] = None


def prestart(argv: tuple[str, ...] = ()) -> None:
    """Start the recorder process now, before knowing what it will record (see cli.main);
    argv: the command's arguments, for a guess at the kind of store it will open."""
    global _prestarted, _handed_on
    if _prestarted is None:
        _handed_on = False
        uri = next((a.partition("=")[2] for a in reversed(argv) if a.startswith("tracking.uri=")),
                   os.environ.get("MLFLOW_TRACKING_URI", ""))
        _prestarted = _process(uri, run_tags=True)
        _prestarted.submit(_ready)


def reader(uri: str) -> ProcessPoolExecutor:
    """A process of its own for a read-only command's MLflow reads (reproduce): it imports
    MLflow and its store's module (~2.5 s) while this process imports torch (~1.3 s) and the
    modules that train. Its tasks are functions of a module that does not import torch; what
    they return is plain data (unpickling MLflow's objects here would import MLflow here too).
    A recorder handed on from an earlier command (keep_between_jobs) serves instead, in this
    command's folder. Give it back with done_reading."""
    global _prestarted
    if _handed_on and _prestarted is not None:
        pool, _prestarted = _prestarted, None
        pool.submit(os.chdir, os.getcwd())  # a relative sqlite:/// URI is this command's
    else:
        pool = _process(uri, run_tags=False)
    pool.submit(redaction.add_secrets, *redaction.remembered())  # it redacts the errors it raises
    return pool


def done_reading(pool: ProcessPoolExecutor, whole: bool) -> None:
    """Kept for a next command (keep_between_jobs) if its reads ended `whole`, none cut short
    by an error (its task may still run); else ended without waiting."""
    global _prestarted, _handed_on
    if _kept and whole and _prestarted is None:
        _prestarted, _handed_on = pool, True
    else:
        pool.shutdown(wait=False, cancel_futures=True)


_kept = False  # a Hydra multirun: the next job takes over this recorder process
_handed_on = False  # _prestarted was handed on by an earlier job: started and idle


def keep_between_jobs() -> None:
    """In a multirun, hand the recorder process on from job to job: each job would otherwise
    pay for MLflow's import and a new connection (~3 s; a 12-job `bpexp train -m` went from
    45 s to 12 s). Each job still opens its own store and experiment (`_connect`)."""
    global _kept
    _kept = True


def close_kept() -> None:
    """End a recorder process kept for a next job that will not come (the command ends): its
    queue is empty, so this is quick, and the pool's semaphores are released (an os._exit
    with the pool open left the resource tracker warning of leaked ones)."""
    global _prestarted
    if _prestarted is not None:
        _prestarted.shutdown(wait=True)
        _prestarted = None


def abandon() -> None:
    """Stop a prestarted recorder at once, without waiting for its imports (on bad input). One
    handed on between jobs has nothing to wait for: it stays for the next."""
    global _prestarted
    if _prestarted is not None and not _handed_on:
        for child in multiprocessing.active_children():
            # SIGKILL: it has written nothing, and it ignores SIGTERM once _init runs, so a
            # terminate() left the pool waiting for its imports to finish (1.85 s of a 2.6 s
            # `bpexp train train.lr=abc`)
            child.kill()
        # Wait for the pool's manager thread to close its wake-up pipe: at exit, on Python 3.11,
        # concurrent.futures' hook races it and prints "OSError: Bad file descriptor" (CI, once).
        _prestarted.shutdown(wait=True, cancel_futures=True)
        _prestarted = None


STOP_S = 10.0  # the longest an ending command waits for the recorder to end a run


class Recorder:
    """Handle on the recorder process. Use as a context manager; it waits for pending work."""

    def __init__(self, uri: str, experiment: str):
        global _prestarted
        prestart()
        self.uri = uri
        self._pool, _prestarted = _prestarted, None
        self._unread: list[Future] = []  # futures of `later` calls, their errors read by `settle`
        self._pool.submit(redaction.add_secrets, *redaction.remembered())  # first: it redacts what it writes too
        self.experiment_id: Future = self._pool.submit(_connect, uri, experiment, os.getcwd())

    def start_run(self, name: str, tags: dict, parent_run_id: Optional[str] = None,
                  start_time: Optional[int] = None) -> Future:
        return self._pool.submit(_start_run, name, tags, parent_run_id, start_time or int(time.time() * 1000))

    def new_run(self, name: str, tags: dict, record: RunRecord, parent_run_id: Optional[str] = None,
                end_status: Optional[str] = "FINISHED") -> Future:
        """Start a run and record it in one task; the future gives the run id."""
        return self._pool.submit(_new_run, name, tags, parent_run_id, int(time.time() * 1000), record, end_status)

    def record(self, run_id: str, record: RunRecord, end_status: Optional[str] = "FINISHED") -> Future:
        return self._pool.submit(_record, run_id, record, end_status)

    @contextmanager
    def run(self, name: str, tags: dict, parent_run_id: Optional[str] = None) -> Iterator[Future]:
        """Start a run; if the block raises, end it FAILED (KILLED on Ctrl-C) with the reason."""
        run = self.start_run(name, tags, parent_run_id)
        try:
            yield run
        except BaseException as e:
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            try:  # bounded: a store that is gone leaves the run to the next command's settling
                self.call(tracking.end_run, run.result(timeout=STOP_S), status,
                          f"{type(e).__name__}: {e}").result(timeout=STOP_S)
            except Exception:
                pass
            raise

    def run_links(self, run_id: str) -> dict[str, str]:
        """Where a run is, for Optuna's user attributes: its id, and its page on a server."""
        links = {names.RUN_ID: run_id}
        if stores.is_tracking_server(self.uri):
            links[names.RUN_URL] = ui_links.run_url(self.uri, self.experiment_id.result(), run_id)
        return links

    def call(self, fn: Callable, *args, **kwargs) -> Future:
        """fn(client, *args, **kwargs), a module-level function, run in the recorder."""
        return self._pool.submit(_call, fn, *args, **kwargs)

    def later(self, fn: Callable, *args, **kwargs) -> None:
        """As `call`, for work nobody waits for now; `settle` (and closing) raises its error."""
        self._unread.append(self.call(fn, *args, **kwargs))

    def settle(self) -> None:
        """Wait for the `later` calls; raise the first error among them."""
        unread, self._unread = self._unread, []
        for f in unread:
            f.result()

    def close(self) -> None:
        global _prestarted, _handed_on
        try:
            self.settle()
        except BaseException:
            self.stop()
            raise
        if _kept and _prestarted is None:
            _prestarted, _handed_on = self._pool, True  # the next job's Recorder takes it (see keep_between_jobs)
        else:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()  # and raise what a `later` call raised
        else:  # the error on its way out is the one to report
            self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """On the way out with an error: drop queued work, give the task at hand `timeout`
        seconds (a write cut short by a kill is rolled back by the store), then end the process."""
        # shutdown(wait=False) forgets the pool's manager thread, so a later shutdown(wait=True)
        # no longer joins it: join it here. Left running at exit, it races concurrent.futures'
        # exit hook, which writes to the wake-up pipe the thread is closing ("OSError: Bad file
        # descriptor" printed after the one-line error; seen in CI after a killed recorder).
        manager = self._pool._executor_manager_thread
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for child in multiprocessing.active_children():
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
        if manager is not None:
            manager.join(timeout)
