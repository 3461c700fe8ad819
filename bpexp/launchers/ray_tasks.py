"""launcher=ray: one Ray task per worker (not per trial) on a running Ray cluster.

Each task runs the worker's command as a subprocess on its node and returns its exit status:
a worker is a whole `bpexp sweep` with its own recorder process, which a Ray worker process
should not host (Ray Tune's actor per trial costs more than a bpexp trial: see
docs/scale-out.md). A task whose node is lost is retried by Ray (max_retries): the retry
resumes the study like any worker. Ray ends a driver's tasks when the driver goes, so this
launcher always follows its workers (launcher.follow=false is refused).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from bpexp.config.schema import ConfigError, LauncherConfig
from bpexp.launchers.local import SETTLE_S
from bpexp.launchers.workers import Workers, WorkerSpec

CONNECT_S = 5.0  # a Ray head that does not accept a connection in this time is not there
RETRIES = 3  # Ray re-runs a task whose worker process or node died, up to this many times


def connect(cfg: LauncherConfig) -> None:
    """ray.init on the cluster, bounded: Ray's own client waits minutes for a head that is not
    there (measured: over 120 s for a closed port), so the address is probed first."""
    try:
        import ray
    except ImportError:
        raise ConfigError("launcher", "ray", "Ray is not installed here: pip install 'bpexp[ray]'") from None
    address = cfg.address or os.environ.get("RAY_ADDRESS") or "auto"
    if address != "auto" and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_S).close()
        except (OSError, ValueError) as e:
            why = "not host:port" if isinstance(e, ValueError) else getattr(e, "strerror", None) or "no answer"
            raise ConfigError("launcher.address", address, f"no Ray cluster answers there ({why})") from None
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as e:
        raise ConfigError("launcher.address", address, f"no Ray cluster answers there ({str(e).splitlines()[0]})") from None


def run_worker(command: list[str], env: dict, cwd: str, log: str) -> int:
    """A Ray task: one worker, as a subprocess of this node's Python; its exit status."""
    command = [sys.executable, *command[1:]]  # this node's interpreter, with bpexp installed
    here = os.path.isdir(cwd)
    if here:
        os.makedirs(os.path.dirname(log), exist_ok=True)
    out = open(log, "ab") if here else subprocess.DEVNULL  # else the log is Ray's (its stdout)
    try:
        proc = subprocess.Popen(command, env={**os.environ, **env}, cwd=cwd if here else None, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait()
        except BaseException:  # ray.cancel: the worker settles, as on SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(SETTLE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    finally:
        if out is not subprocess.DEVNULL:
            out.close()


class RayWorkers(Workers):
    def __init__(self, spec: WorkerSpec, n: int):
        import ray

        task = ray.remote(num_cpus=spec.cpus, max_retries=RETRIES)(run_worker)
        self.n, self.refs = n, [task.remote(spec.command(), {**spec.env, "BPEXP_WORKER_INDEX": str(i)}, spec.cwd,
                                            str(spec.logs / f"worker-{i}.log")) for i in range(n)]
        self.where = f"{n} Ray tasks on {ray.get_runtime_context().gcs_address} (logs: {spec.logs}/worker-*.log on their nodes)"

    def running(self) -> bool:
        import ray

        _, running = ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        return bool(running)

    def failures(self) -> list[str]:
        import ray

        found = []
        for i, ref in enumerate(self.refs):
            try:
                code = ray.get(ref, timeout=0)
            except Exception as e:
                found.append(f"worker {i}: {type(e).__name__}")
                continue
            if code != 0:
                found.append(f"worker {i}: exit {code}")
        return found

    def cancel(self) -> None:
        import ray

        for ref in self.refs:
            ray.cancel(ref)
        ray.wait(self.refs, num_returns=len(self.refs), timeout=SETTLE_S + 5)
