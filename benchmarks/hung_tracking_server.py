"""Seconds from a tracking server's SIGSTOP (a hung server: it accepts, never answers) to the
end of the sweep recording to it; each run prints the time, the exit status and the one line.

    python benchmarks/hung_tracking_server.py [--runs 4]

Starts `mlflow server` on a sqlite store and uses tests/test_faults.py's `python -m bpexp
sweep`; run it from the repository's root. docs/findings.md, "Faults", has the figures.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_faults import free_port, sweep_under_way, wait_for  # noqa: E402


def start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on a sqlite store; a new store is made from bpexp's migrated template
    (tracking.create_store), not by the server's own migrations. One web worker and no job
    runner (MLflow 3's GenAI jobs: a process pool of its own): 11 s to healthy, not 32 s."""
    import urllib.request

    from bpexp.recording import tracking

    if not (tmp_path / "srv.db").exists():
        tracking.create_store(f"sqlite:///{tmp_path}/srv.db")
    p = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/srv.db",
                          "--artifacts-destination", str(tmp_path / "art"), "--host", "127.0.0.1", "--port", str(port),
                          "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read(), timeout=120, every=0.5)
    return p


def one_run() -> tuple[float, int, str]:
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    server = start_server(tmp, port)
    try:
        p, _ = sweep_under_way(tmp, f"http://127.0.0.1:{port}", 12)
        os.killpg(server.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = p.communicate(timeout=600)
        return time.monotonic() - t0, p.returncode, err.strip()
    finally:
        os.killpg(server.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    for _ in range(parser.parse_args().runs):
        seconds, code, line = one_run()
        print(f"{seconds:6.1f} s after SIGSTOP: exit {code}, {len(line.splitlines())} line: {line[:120]}", flush=True)


if __name__ == "__main__":
    main()
