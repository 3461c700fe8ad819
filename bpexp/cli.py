"""Command line entry point: `bpexp train|sweep|lr-find ...` (Hydra apps in apps.py), and
`bpexp reproduce|compare ...` (plain argparse: they read MLflow, no config to compose).

Kept light on purpose: the recorder process is started before anything heavy is imported,
and it re-imports this module as its __main__ (multiprocessing's spawn does that).
"""
from __future__ import annotations

import os
import sys

from bpexp.runtime import interrupts, redaction
from bpexp.runtime.failpoints import failpoint
from bpexp.runtime.interrupts import Terminated, handle_sigterm

COMMANDS = ("train", "sweep", "lr-find")
# Hydra flags that print something instead of running: then there is nothing to record.
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--version",
              "--shell-completion", "-sc", "--experimental-rerun"}

USAGE = """usage: bpexp {train,sweep,lr-find} [hydra overrides and flags ...]
       bpexp {reproduce,compare} ...

  bpexp train                      train the seed's network once, record it in MLflow
  bpexp train model.hidden=8 train.lr=0.05
  bpexp train -m train.lr=0.001,0.01,0.1     one recorded run per value
  bpexp sweep                      the Optuna study of learning rate x hidden units
  bpexp sweep sweep.n_trials=200 sweep.sampler=gp train.epochs=2000
  bpexp lr-find                    the learning-rate range test: a suggested train.lr
  bpexp lr-find train.optimizer=adam model.hidden=16
  bpexp reproduce RUN_ID           train a recorded run again and compare (exit 1 on a mismatch)
  bpexp compare [RUN_ID ...] [--parent RUN_ID] [--experiment NAME]
                                   rank recorded runs, draw comparison figures (outputs/)
  bpexp COMMAND --help             the command's config groups and keys
"""


def main(argv: list[str] | None = None) -> None:
    whole_process = argv is None  # the bpexp command itself, not a caller in its own process (the tests)
    argv = list(sys.argv[1:] if argv is None else argv)
    handle_sigterm()  # as Ctrl-C: whatever runs is settled, then exit 143
    # Held from here until the command's own handling begins (apps.run, read_only_command): a
    # signal that cuts the recorder's start or an import in two left a traceback (a thread
    # joined before it started, the resource tracker's warnings) instead of the one line.
    interrupts.hold()
    # Passwords on the command line or in the environment: hidden in whatever is printed or recorded
    redaction.remember(*argv, os.environ.get("MLFLOW_TRACKING_URI", ""))
    try:
        failpoint("start")
        try:
            run(argv)
        except SystemExit as e:
            if not whole_process:
                raise
            code = e.code
        else:
            code = 0
        if whole_process:
            _exit(code)
    except KeyboardInterrupt as e:  # before a command's own handling began (start-up, composing)
        interrupts.release(act=False)  # this is the handling
        command = argv[0] if argv and argv[0] in (*COMMANDS, "reproduce", "compare") else ""
        print(f"bpexp{' ' + command if command else ''}: {'terminated' if isinstance(e, Terminated) else 'interrupted'}",
              file=sys.stderr)
        from bpexp.recording import recorder

        recorder.abandon()  # a recorder process started for nothing: gone, not waited for
        # Nothing to settle this early; exit now: the interpreter's exit (atexit hooks of the
        # libraries interrupted in their imports) ended some of these runs killed by SIGINT (-2).
        code = 143 if isinstance(e, Terminated) else 130
        if not whole_process:
            sys.exit(code)
        _exit(code)


def _exit(code) -> None:
    """End the bpexp process now, as sys.exit(code) would, without the interpreter's teardown:
    every write is done and committed by now (the recorder process waited for), and tearing
    down torch's, MLflow's and Optuna's modules took ~0.45 s of a 3 s `bpexp train`. Logging's
    handlers and the standard streams are flushed first; the rest is the operating system's."""
    import logging

    if isinstance(code, str):  # sys.exit("message"): printed, exit 1
        print(code, file=sys.stderr)
        code = 1
    recorder = sys.modules.get("bpexp.recording.recorder")
    if recorder is not None:
        recorder.close_kept()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone (`bpexp compare | head`), a stream closed
            pass
    os._exit(code or 0)


def run(argv: list[str]) -> None:
    if argv and argv[0] in ("reproduce", "compare"):
        sys.exit(read_only_command(argv[0], argv[1:]))
    if not argv or argv[0] not in COMMANDS:
        interrupts.release()
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    command, rest = argv[0], argv[1:]
    info = any(a.split("=")[0] in INFO_FLAGS for a in rest)
    if not info:
        from bpexp.recording import recorder

        recorder.prestart(tuple(rest))  # MLflow's imports now overlap with torch's and the training
    from bpexp.commands import apps

    apps.run(command, rest, info)


def read_only_command(command: str, args: list[str]) -> int:
    """`bpexp reproduce|compare`: their exit status; a failure is one line (bpexp/runtime/failures.py)."""
    from bpexp.runtime import failures
    from bpexp.runtime.stores import StoreError

    try:
        if command == "reproduce":
            from bpexp.commands.reproduce import main
        else:
            from bpexp.commands.compare import main
        interrupts.release()  # a signal held meanwhile acts here: one line
        return main(args)
    except StoreError as e:
        print(f"bpexp {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"bpexp {command}: {'terminated' if isinstance(e, Terminated) else 'interrupted'}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:  # its reader stopped reading (`bpexp compare | head`): nothing to say
        return 141  # what a shell reports for a process ended by SIGPIPE
    except Exception as e:
        return failures.report(command, e)
    finally:
        interrupts.release(act=False)  # an import that failed before the release above
