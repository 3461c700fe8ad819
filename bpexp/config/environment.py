"""The checks a config needs this machine for: a CUDA device that exists, memory for the loss
curves, a tracking store that answers. Like bpexp/config/validation.py, each failure is a
ConfigError naming the key and the value, raised before anything trains; unlike it, the
answer depends on where the command runs, so these run at the command's start, not in precheck.
"""
from __future__ import annotations

from typing import Optional

from bpexp.config.schema import ConfigError
from bpexp.runtime import stores
from bpexp.training.budget import memory_problem
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


def check_tracking_uri(uri: Optional[str]) -> str:
    """The resolved tracking URI, checked before anything runs: a server must answer, a local
    store's folder must be writable. Raises ConfigError naming tracking.uri otherwise."""
    uri = stores.resolved_uri(uri)
    problem = stores.store_problem(uri)
    if problem:
        raise ConfigError("tracking.uri", redaction.redact(uri), problem)
    return stores.resolve_uri(uri)
