"""Shared helpers: run the real `bpexp` command in a temporary folder, read MLflow back."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_bpexp(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m bpexp ARGS` in cwd, with no tracking URI inherited from the caller."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bpexp", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def bpexp(tmp_path):
    """Call as bpexp("train", "train.epochs=100"); runs in tmp_path."""
    return lambda *args, **kw: run_bpexp(*args, cwd=tmp_path, **kw)


@pytest.fixture
def local_store(tmp_path):
    """The MLflow client for the default sqlite store a run in tmp_path writes."""
    from mlflow.tracking import MlflowClient

    return lambda: MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
