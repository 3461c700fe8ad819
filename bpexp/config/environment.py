"""The checks a config needs this machine for: a CUDA device that exists, memory for the loss
curves, a tracking store that answers. Like bpexp/config/validation.py, each failure is a
ConfigError naming the key and the value, raised before anything trains; unlike it, the
answer depends on where the command runs, so these run at the command's start, not in precheck.
"""
from __future__ import annotations

import os
import socket
from typing import Optional

from bpexp.config.schema import ConfigError, storage_default
from bpexp.runtime import stores
from bpexp.training.budget import available_memory, memory_problem, network_problem
from bpexp.runtime import redaction


def check_device(device: str, key: str = "train.device") -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(key, device, "CUDA is not available on this machine")
    if device.startswith("cuda:") and device[5:].isdigit() and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(key, device, f"this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_memory(epochs: int, members: int = 1) -> None:
    problem = memory_problem(epochs, members, members)
    if problem:
        raise ConfigError("train.epochs", epochs, problem)


def check_network_memory(hidden, data, members: int = 1, key: str = "model.hidden") -> None:
    """Refuse, before allocating, networks too big for this machine (model.hidden=[30000,30000]
    would allocate 7.9 GB before failing, or wake the OOM killer)."""
    n_inputs = len(data.inputs) if str(data.source) == "csv" else 1
    problem = network_problem(hidden, n_inputs, members)
    if problem:
        raise ConfigError(key, hidden, problem)


def check_tracking_uri(uri: Optional[str]) -> str:
    """The resolved tracking URI, checked before anything runs: a server must answer, a local
    store's folder must be writable. Raises ConfigError naming tracking.uri otherwise."""
    uri = stores.resolved_uri(uri)
    problem = stores.store_problem(uri)
    if problem:
        raise ConfigError("tracking.uri", redaction.redact(uri), problem)
    return stores.resolve_uri(uri)


def check_storage(url: Optional[str]) -> None:
    """A study's Optuna storage, checked before the sweep's modules are imported (torch: ~1.4 s)
    and its recorder has imported MLflow: a URL, a sqlite file's folder writable with no folder
    in the file's place, a database server that accepts a connection. Whether it lets this user
    in is left to Optuna's own opening (study/storage.py), which says so as a ConfigError too."""
    url = url or storage_default()
    path = stores.sqlite_file(url)
    problem = stores.sqlite_problem(path) if path else database_problem(url)
    if problem:
        raise ConfigError("sweep.storage", redaction.redact(url), problem)


# The port a database server listens on when its URL names none (SQLAlchemy's dialects' defaults).
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def database_problem(url: str, timeout: float = 5.0) -> Optional[str]:
    """Why no database can be opened at this SQLAlchemy URL, or None: one TCP connection to its
    host, closed at once (PostgreSQL logs nothing for it). A URL without a host or with a socket
    path among its query's values (?host=/var/run/postgresql, ?unix_socket=/tmp/mysql.sock: the
    driver connects there, not to the host), or of an unknown dialect without a port, is left to
    the real opening."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError):  # its text is not repeated: it may hold a password
        return "not a database URL (sqlite:///PATH, postgresql://USER@HOST/DB, mysql://USER@HOST/DB)"
    port = u.port or DEFAULT_PORTS.get(u.get_backend_name())
    values = [v for value in u.query.values() for v in ([value] if isinstance(value, str) else value)]
    if not u.host or not port or any(v.startswith("/") for v in values):
        return None
    try:
        socket.create_connection((u.host, port), timeout=timeout).close()
    except OSError as e:
        why = "no answer" if isinstance(e, socket.timeout) else e.strerror or type(e).__name__
        return f"no database server answers at {u.host}:{port} ({why})"
    return None


# Reading a CSV peaks at about 12 bytes of memory per byte of file (csv.reader's lists of
# str, then floats): measured 429 MB over the process's base for a 38.5 MB, 1e6-row file
# (14 s). A file that cannot fit is refused; a large one is announced, not read in silence.
CSV_BYTES_PER_FILE_BYTE = 12
CSV_ANNOUNCE_BYTES = 20 * 2**20


def check_data_file(data) -> None:
    """A CSV too big to read in this machine's memory: refused, naming data.path; a large one:
    one line saying it is being read (a 10-million-row file takes minutes)."""
    if str(data.source) != "csv" or not data.path or not os.path.isfile(data.path):
        return  # the dataset's own checks name a missing file
    size = os.path.getsize(data.path)
    need, have = size * CSV_BYTES_PER_FILE_BYTE, available_memory()
    if have is not None and need > 0.8 * have:
        raise ConfigError("data.path", data.path, f"a {size / 2**20:.0f} MiB file: reading it needs about "
                          f"{need / 2**30:.3g} GiB; {have / 2**30:.3g} GiB of memory is available")
    if size > CSV_ANNOUNCE_BYTES:
        print(f"reading data.path={data.path} ({size / 2**20:.0f} MiB)", flush=True)
