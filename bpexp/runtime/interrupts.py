"""Ctrl-C and SIGTERM: both stop a command the same way, at a point where nothing is half done.

SIGTERM is what Kubernetes, Slurm and systemd send before they kill; it is raised as
`Terminated`, a KeyboardInterrupt, so every path that settles a Ctrl-C (trials failed, runs
ended KILLED, the parent run ended) settles a SIGTERM too. A step that must not be cut in two
(asking a batch, telling a trial and ending its run) runs under `deferred_interrupts`, which
holds the signal until the step ends; a long step asks `interrupted()` between its parts, so
a signal is acted on within one part (milliseconds), never after a whole batch.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (exit status 143 instead of 130)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def handle_sigterm() -> None:
    """From now on, SIGTERM raises Terminated in the main thread."""
    signal.signal(signal.SIGTERM, _raise_terminated)


_caught: list[int] = []  # signals noted while deferred (main thread only)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then raise. Python runs signal handlers
    in the main thread: the handler notes the signal; the block's end (or `interrupted()`
    inside it, for a block that can stop early) acts on it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    note = lambda signum, frame: _caught.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
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
