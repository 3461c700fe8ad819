"""The checks a config needs this machine for: a CUDA device that exists, memory for the loss
curves, a tracking store that answers. Like bpexp/config/validation.py, each failure is a
ConfigError naming the key and the value, raised before anything trains; unlike it, the
answer depends on where the command runs, so these run at the command's start, not in precheck.
"""
from __future__ import annotations

import os
from typing import Optional

from bpexp.config.schema import ConfigError
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
