"""Who runs where: this process's name in every record it makes ("host:pid"), and whether the
process a record names is provably gone (the next command settles what such a process left
RUNNING: its Optuna trials, its MLflow runs). Nothing here imports MLflow, Optuna or torch.
"""
from __future__ import annotations

import os
import socket

THIS_WORKER = f"{socket.gethostname()}:{os.getpid()}"


def worker_alive(worker: str) -> bool:
    """False only for a worker ("host:pid") of this host whose process is gone; a worker on
    another host counts as alive (Optuna's heartbeat deals with those). A pid taken again by
    another process reads as alive: the safe side (its runs stay RUNNING, never the reverse)."""
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
