"""Ctrl-C and SIGTERM: both stop a command the same way, at a point where nothing is half done.

SIGTERM is what Kubernetes, Slurm and systemd send before they kill; it is raised as
`Terminated`, a KeyboardInterrupt, so every path that settles a Ctrl-C (trials failed, runs
ended KILLED, the parent run ended) settles a SIGTERM too. A step that must not be cut in two
(asking a batch, telling a trial and ending its run) runs under `deferred_interrupts`, which
holds the signal until the step ends; a long step asks `interrupted()` between its parts, so
a signal is acted on within one part (milliseconds), never after a whole batch.

A held signal waits HOLD_S at most: a step stuck on a database or tracking server that stopped
answering (SIGSTOP, a network partition: the wait inside psycopg runs Python's signal handlers
every 0.1 s) is cut there, and what it left RUNNING is settled by the resume, as after kill -9.
A second Ctrl-C or SIGTERM acts at once.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (exit status 143 instead of 130)."""


class ServerStopped(KeyboardInterrupt):
    """A server the command depends on stopped answering, found by a watching thread
    (study/workers.Heartbeat): the main thread stops as on SIGTERM (what runs is settled as far
    as it can be, the resume settles the rest) and the command says why, exit 1."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


_stop_reasons: list[str] = []


def _raise_stopped(signum, frame) -> None:
    raise ServerStopped(_stop_reasons[0] if _stop_reasons else "a server stopped answering")


def handle_sigterm() -> None:
    """From now on, SIGTERM raises Terminated in the main thread, and `stop_main` ServerStopped."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGUSR1, _raise_stopped)


def stop_main(reason: str) -> None:
    """From another thread: raise ServerStopped(reason) in the main thread, wherever it waits (a
    signal: psycopg's and MLflow's waits run Python's handlers every 0.1 s). Not held by
    deferred_interrupts: what the step waits on will not answer."""
    _stop_reasons.append(reason)
    if signal.getsignal(signal.SIGUSR1) is _raise_stopped:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)


_caught: list[int] = []  # signals noted while deferred (main thread only)
HOLD_S = 5.0  # the longest a held signal waits for the step it arrived in


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then raise. Python runs signal handlers
    in the main thread: the handler notes the signal; the block's end (or `interrupted()`
    inside it, for a block that can stop early) acts on it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = _holding()
    try:
        yield
    finally:
        _restore(previous)


def _holding() -> dict:
    """Ctrl-C and SIGTERM noted (`_note`), not raised; the handlers they replace."""
    previous = {s: signal.signal(s, _note) for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, _held_too_long)
    return previous


def _restore(previous: dict) -> None:
    """The handlers as they were; a signal noted meanwhile raised now."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    for s, handler in previous.items():
        signal.signal(s, handler)
    pending = _pending()
    if pending is not None:
        raise pending


_held: dict = {}  # the handlers hold() replaced, while it holds


def hold() -> None:
    """Hold Ctrl-C and SIGTERM from here until release() (HOLD_S at most once one came): the
    composing of the config by Hydra and the first imports, which a signal cuts in two and
    leaves broken (OmegaConf's flag_override then fails with an unrelated AttributeError, and
    Hydra prints its traceback instead of the interrupt). Main thread only; not nested."""
    if threading.current_thread() is not threading.main_thread() or _held:
        return
    _held.update(_holding())


def release(act: bool = True) -> None:
    """End hold(): the handlers as they were, and a signal that came meanwhile raised now
    (act=False: forgotten, for a caller already handling the interrupt)."""
    if not _held:
        return
    previous = dict(_held)
    _held.clear()
    if not act:
        _caught.clear()
    _restore(previous)


def _note(signum, frame) -> None:
    """A signal while deferred: held until the step ends, HOLD_S at most; a second one acts now."""
    _caught.append(signum)
    if len(_caught) > 1:
        raise _pending()
    signal.setitimer(signal.ITIMER_REAL, HOLD_S)


def _held_too_long(signum, frame) -> None:
    pending = _pending()
    if pending is not None:
        raise pending


def interrupted() -> bool:
    """Whether a signal is being held by deferred_interrupts (a long block stops early)."""
    return bool(_caught)


def _pending() -> Optional[KeyboardInterrupt]:
    if not _caught:
        return None
    signum = _caught[0]
    _caught.clear()
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


class StepTimeout(BaseException):
    """A step that `within` bounds ran out of time. Not an Exception: the best-effort steps
    inside such a block (`except Exception: continue`) must not swallow it."""


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Raise StepTimeout in the main thread once `seconds` have passed inside the block: a wait
    that Python's signal handlers can break (psycopg's and MLflow's waits run them every 0.1 s)
    is bounded even with no client-side timeout (a server stopped on this host: its kernel
    still acknowledges). Elsewhere than the main thread, or inside deferred_interrupts (which
    owns the timer), the block runs unbounded."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGALRM) is _held_too_long:
        yield
        return

    def expired(signum, frame):
        raise StepTimeout(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
