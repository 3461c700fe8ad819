"""Failpoints: the places the crash, fault and signal tests break bpexp at, named by the
environment, so that a test acts at a known moment instead of racing a running process.

    BPEXP_FAILPOINT=name[:n]          die there as kill -9 would (the n-th time it is reached)
    BPEXP_FAULT=name[:n]              raise there what a full disk raises (OSError ENOSPC)
    BPEXP_SIGNAL=name[:n]=SIGNAL      send this process SIGNAL there (SIGINT: Ctrl-C, SIGTERM)
    BPEXP_FAILPOINT_WORKER=i          only in a launcher's worker i ($BPEXP_WORKER_INDEX): one of N
    BPEXP_FAILPOINT_ONCE=path         only in the first process of all to get there (it makes `path`):
                                      one of N workers dies mid-trial, whichever an engine starts first

The places: start (the first line of the command), composing (each config precheck composes),
failing (reporting bad input), store-made (a new sqlite store made, not yet in place; in the recorder process
for MLflow's), parent-created, asking (each trial asked), training, recording, told, neighbours-queued (the
end's trials next to the best ones queued, not yet asked) (bpexp sweep). No-ops otherwise: a dictionary lookup or two.
"""
from __future__ import annotations

import errno
import os
import signal
from collections import Counter

_hits: Counter = Counter()


def _reached(variable: str, name: str) -> bool:
    want, _, nth = os.environ.get(variable, "").split("=")[0].partition(":")
    if want != name:
        return False
    worker = os.environ.get("BPEXP_FAILPOINT_WORKER")
    if worker is not None and worker != os.environ.get("BPEXP_WORKER_INDEX"):
        return False
    _hits[variable, name] += 1
    return _hits[variable, name] == int(nth or 1) or (variable != "BPEXP_SIGNAL" and _hits[variable, name] > int(nth or 1))


def _first_to_get_there() -> bool:
    lock = os.environ.get("BPEXP_FAILPOINT_ONCE")
    if not lock:
        return True
    try:  # O_EXCL: exactly one process of all that share the path makes it
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def failpoint(name: str) -> None:
    if _reached("BPEXP_FAILPOINT", name) and _first_to_get_there():
        os.kill(os.getpid(), signal.SIGKILL)
    if _reached("BPEXP_SIGNAL", name):  # once: as a user presses Ctrl-C once
        os.kill(os.getpid(), getattr(signal, os.environ["BPEXP_SIGNAL"].partition("=")[2]))


def fault(name: str) -> None:
    if _reached("BPEXP_FAULT", name):
        raise OSError(errno.ENOSPC, f"No space left on device (BPEXP_FAULT={name})")
