"""Ctrl-C and SIGTERM at many moments of a command: each case prints the exit status, the
seconds from the signal to the exit, the lines on stderr, and any process left after 5 s.
A case is "ok" when the command ends with one line (or none, when it ended before the signal
came), exit 130/143 (or its own status, when it had ended), no traceback, nothing left.

    python benchmarks/signals_at_any_moment.py [--at 0.3 1 2.5 5 8] [--command train train.epochs=3000]

Timing-based, so a benchmark and not a test (the tests signal at failpoints: tests/test_faults.py).
docs/findings.md, "Faults", has the figures.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

COMMANDS = [["sweep", "sweep.n_trials=4", "train.epochs=500", "sweep.progress=false"],
            ["train", "train.epochs=3000"],
            ["sweep", "sweep.search_space.hidden.low=0", "sweep.search_space.hidden.log=false"]]  # bad input


def left_in_session(sid: int) -> list[str]:
    """The processes still in the command's session after up to 5 s (what it started, exiting)."""
    for _ in range(50):
        pids = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True).stdout.split()
        if not pids:
            return []
        time.sleep(0.1)
    return [subprocess.run(["ps", "-o", "args=", "-p", p], capture_output=True, text=True).stdout.strip()[:80]
            for p in pids]


def one_case(command: list[str], sig: signal.Signals, at: float) -> bool:
    folder = tempfile.mkdtemp(prefix="bpexp-signal-")
    p = subprocess.Popen([sys.executable, "-m", "bpexp", *command], cwd=folder, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(at)
    sent, ended_before = time.monotonic(), p.poll() is not None
    if not ended_before:
        p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=60)
        took = f"{time.monotonic() - sent:.1f} s"
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        took = "no exit within 60 s"
    left = left_in_session(p.pid)
    lines = err.strip().splitlines()
    expected = {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
    # A signal that came as the command was exiting by itself (its one line printed) kills it: the
    # default action once Python's handlers are gone.
    own_end = p.returncode in (0, 2, -sig) and len(lines) == 1 and "error:" in lines[0]
    ok = ((p.returncode == expected or ended_before or own_end) and len(lines) <= 1 and not left
          and "Traceback" not in out + err and took.endswith(" s"))
    print(f"{'ok ' if ok else 'BAD'} {' '.join(command)[:40]:40} {sig.name:7} at {at:4} s: exit {p.returncode}, "
          f"{took}; {len(lines)} line(s){': ' + lines[-1][:100] if lines else ''}{'; left: ' + str(left) if left else ''}",
          flush=True)
    if not ok and len(lines) > 1:  # what it printed, to see where the signal landed
        print("    " + "\n    ".join(lines[:40]))
    shutil.rmtree(folder, ignore_errors=True)
    return ok


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--at", type=float, nargs="+", default=[0.3, 1.0, 2.5, 5.0, 8.0], help="seconds after the start")
    a.add_argument("--command", nargs="+", default=None, help="one command's arguments (default: three commands)")
    args = a.parse_args()
    commands = [args.command] if args.command else COMMANDS
    results = [one_case(c, s, at) for c in commands for s in (signal.SIGTERM, signal.SIGINT) for at in args.at]
    print(f"{sum(results)} of {len(results)} cases ok")


if __name__ == "__main__":
    main()
