"""launcher=local: the workers as processes on this machine, one log file each.

Each worker runs in a session of its own: a Ctrl-C in the terminal reaches the launching
command alone, which sends each worker one SIGTERM (two would skip their settling: see
bpexp/runtime/interrupts.py) and waits for them to settle.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

from bpexp.launchers.workers import LaunchError, Workers, WorkerSpec

SETTLE_S = 30.0  # a worker's settling after SIGTERM is bounded (interrupts.HOLD_S + its settle); then SIGKILL


class LocalWorkers(Workers):
    def __init__(self, spec: WorkerSpec, n: int):
        self.n, self.procs = n, []
        try:
            spec.logs.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                with open(spec.logs / f"worker-{i}.log", "ab") as log:
                    self.procs.append(subprocess.Popen(
                        spec.command(), cwd=spec.cwd, env={**os.environ, **spec.env, "BPEXP_WORKER_INDEX": str(i)},
                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        except OSError as e:
            self.cancel()
            raise LaunchError(f"could not start worker {len(self.procs)} of {n} here: {e.strerror or e}") from None
        self.where = f"{n} worker processes on this machine (logs: {spec.logs}/worker-*.log)"

    def running(self) -> bool:
        # Every process polled (a list, not any() over a generator, which stops at the first live
        # one): poll() reaps a dead worker, and until then its zombie reads as alive to the
        # others, who then wait the heartbeat's grace (60 s) for its trials instead of taking them.
        return any([p.poll() is None for p in self.procs])

    def failures(self) -> list[str]:
        return [f"worker {i}: exit {p.returncode}" for i, p in enumerate(self.procs)
                if p.returncode not in (None, 0)]

    def cancel(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SETTLE_S
        for p in self.procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
