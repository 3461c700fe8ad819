"""Failpoints: the places the crash and fault tests break bpexp at, named by the environment.

    BPEXP_FAILPOINT=name[:n]  die there as kill -9 would (the n-th time it is reached)
    BPEXP_FAULT=name[:n]      raise there what a full disk raises (OSError ENOSPC)

No-ops otherwise: one dictionary lookup.
"""
from __future__ import annotations

import errno
import os
import signal
from collections import Counter

_hits: Counter = Counter()


def _reached(variable: str, name: str) -> bool:
    want, _, nth = os.environ.get(variable, "").partition(":")
    if want != name:
        return False
    _hits[variable, name] += 1
    return _hits[variable, name] >= int(nth or 1)


def failpoint(name: str) -> None:
    if _reached("BPEXP_FAILPOINT", name):
        os.kill(os.getpid(), signal.SIGKILL)


def fault(name: str) -> None:
    if _reached("BPEXP_FAULT", name):
        raise OSError(errno.ENOSPC, f"No space left on device (BPEXP_FAULT={name})")
