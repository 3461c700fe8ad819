"""Seconds from a tracking server's SIGSTOP (a hung server: it accepts, never answers) to the
end of the sweep recording to it; each run prints the time, the exit status and the one line.

    python benchmarks/hung_tracking_server.py [--runs 4]

Uses tests/test_faults.py's helpers (`mlflow server` on a sqlite store, `python -m bpexp
sweep`); run it from the repository's root. docs/findings.md, "Faults", has the figures.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_faults import free_port, start_server, sweep_under_way  # noqa: E402


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
