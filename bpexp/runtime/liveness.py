"""Who runs where: this process's name in every record it makes ("host:pid@boot.pidns"), and
whether the process a record names is provably gone (the next command settles what such a
process left RUNNING: its Optuna trials, its MLflow runs); and a helper process that ends
with its parent. Nothing here imports MLflow, Optuna or torch.

A pid means one process only within one PID namespace of one boot of one host. Containers
with host networking (Kubernetes hostNetwork pods, `docker run --network host`) share the
host's name but not its pids: a worker there, judged by `os.kill(pid, 0)` here, read as dead
while it trained (or a stranger's process as alive). So the name carries the boot id and the
PID namespace, and a worker of another one counts as alive here: Optuna's heartbeat, which
every worker writes to the shared storage, is what settles it (bpexp/study/workers.py).
"""
from __future__ import annotations

import os
import signal
import socket


def _place() -> str:
    """This boot and PID namespace: two processes that share them share the meaning of a pid."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()[:8]
    except OSError:
        boot = "0"
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return f"{boot}.{ns}"


PLACE = _place()
THIS_WORKER = f"{socket.gethostname()}:{os.getpid()}@{PLACE}"


def worker_alive(worker: str) -> bool:
    """False only for a worker of this host, boot and PID namespace whose process is gone; any
    other counts as alive (Optuna's heartbeat deals with those). A worker named before the
    namespace was part of the name ("host:pid") is judged by its pid on this host. A pid taken
    again by another process reads as alive: the safe side (its runs stay RUNNING, never the
    reverse)."""
    worker, _, place = worker.partition("@")
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or (place and place != PLACE):
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """A process that died and that its parent has not reaped yet (state Z in /proc): it
    answers os.kill(pid, 0), but it will never finish its trials."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):  # gone meanwhile, or no /proc: as os.kill said
        return False


def die_with_parent() -> None:
    """If the parent process is killed (kill -9), take this one down too, at once (a recorder
    process would otherwise go on recording the tasks already queued, after a resumed sweep
    settled them)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool ends with its queue instead
        pass
