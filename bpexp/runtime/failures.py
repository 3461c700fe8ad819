"""What a failure looks like to the user: one line, naming what failed, never a secret or data.

Bad input is refused before anything runs (exit 2, bpexp/commands/apps.py). Whatever fails later (a
tracking server or database that stops answering, a full disk, a folder made read-only) ends
the command with one line from `describe` and exit status 1, after the command has settled
what it was doing (trials failed, runs ended). BPEXP_DEBUG=1 shows the traceback instead.
"""
from __future__ import annotations

import errno
import os
import re
import sys
from typing import Optional

from bpexp.runtime.redaction import redact

DEBUG = "BPEXP_DEBUG"


def describe(e: BaseException) -> str:
    """One line: what failed and why, with every URL's password hidden."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"no space left on the device ({_first_line(e)})"
    if _in_chain(e, _disk_full):  # sqlite's word for it, anywhere in the error or what caused it (MLflow, SQLAlchemy, Optuna wrap it)
        return "no space left on the device (a sqlite database: database or disk is full)"
    if _in_chain(e, _read_only):  # a read-only mount, or a database file we may not write
        return "cannot write: the store is read-only (a read-only file system, or a database file this user may not write)"
    if isinstance(e, PermissionError):
        return f"permission denied: {e.filename or _first_line(e)}"
    text = _first_line(e)
    name = type(e).__name__
    if unreachable(e):
        server = re.search(r"https?://[^/\s'\"]+", text)
        why = "connection refused" if "refused" in text.lower() else "timed out" if "timed out" in text.lower() else "no answer"
        return f"the MLflow tracking server {server.group(0) if server else ''} stopped answering ({why})".replace("  ", " ")
    if name == "LaunchError":  # bpexp/launchers: its message is the one line
        return text
    if name == "BrokenProcessPool":  # the recorder process died (killed, out of memory): what it had, it wrote
        return ("the recorder process (every MLflow write) died: killed, or out of memory; the runs it "
                "had not finished stay RUNNING until the next command settles them")
    if name == "OperationalError":  # SQLAlchemy: the database (PostgreSQL, a sqlite file) failed
        return f"the database stopped answering or refused a write ({_short(text)})"
    lost = _database_cause(e)
    if lost is not None:  # Optuna's StorageInternalError says "invalid data in the commit" for any of them
        reason = _short(_first_line(lost))
        if "timeout" in reason.lower() or "timed out" in reason.lower():  # a partition, a host gone
            return f"the database server stopped answering ({reason})"
        return f"the database connection was lost, e.g. a restart ({reason})"
    return f"{name}: {text}"


def _in_chain(e: BaseException, test) -> Optional[BaseException]:
    """The first of e and what caused it (its __cause__ or __context__, on down) for which
    test holds; None if none does."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if test(e):
            return e
        e = e.__cause__ or e.__context__
    return None


def disk_full(e: BaseException) -> bool:
    """Whether e, or what caused it, says the disk is full (sqlite says it in words)."""
    return _in_chain(e, _disk_full) is not None


def _disk_full(e: BaseException) -> bool:
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "database or disk is full" in str(e)


def _read_only(e: BaseException) -> bool:
    return (isinstance(e, OSError) and e.errno == errno.EROFS) or "readonly database" in str(e)


def _database_cause(e: BaseException) -> Optional[BaseException]:
    """The SQLAlchemy error behind e (Optuna wraps it), if it says the connection went away."""
    return _in_chain(e, lambda x: type(x).__name__ in ("OperationalError", "InterfaceError", "DisconnectionError")
                     or getattr(x, "connection_invalidated", False))


def unreachable(e: BaseException) -> bool:
    """Whether e says a tracking server did not answer (MLflow wraps requests' errors)."""
    text = str(e)
    return ("Max retries exceeded" in text or "Connection refused" in text
            or type(e).__name__ in ("ConnectionError", "ReadTimeout", "ConnectTimeout"))


def report(command: str, e: BaseException) -> int:
    """Print the one line for an unexpected failure (or re-raise under BPEXP_DEBUG=1); the exit status."""
    if os.environ.get(DEBUG):
        raise e
    print(f"bpexp {command}: error: {describe(e)}; run it again to resume or retry "
          f"({DEBUG}=1 shows the traceback)", file=sys.stderr)
    return 1


def _first_line(e: BaseException) -> str:
    while not str(e).strip() and (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    text = str(e).strip()
    return redact(text.splitlines()[0] if text else type(e).__name__)


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + "..."
