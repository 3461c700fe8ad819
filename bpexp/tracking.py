"""Recording runs in MLflow.

Designed around MLflow's costs: every value of a run goes in a handful of calls (params,
tags and up to 1000 metric rows per `log_batch`; all files of a run in one `log_artifacts`),
never one call per epoch. Anything recorded passes through `redact`, so a password in a
storage or tracking URI never reaches MLflow.

The functions taking a `client` run in the recorder process (bpexp/recorder.py); the rest
(URIs, tags, redaction) are used by the main process too, which never imports MLflow
itself: that is why mlflow is imported inside the functions that need it.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

MAX_ROWS = 1000  # MLflow's limit on metrics per log_batch call
MAX_PARAM_LEN = 6000
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)(?=@)")


def redact(text: str) -> str:
    """Hide the password of every URL in `text`: postgresql://u:secret@h/db -> postgresql://u:***@h/db."""
    return _URL_PASSWORD.sub(r"\g<pre>***", text)


def redact_tree(obj: Any) -> Any:
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {k: redact_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_tree(v) for v in obj]
    return obj


def default_uri(cwd: Optional[str] = None) -> str:
    return "sqlite:///" + str(Path(cwd or os.getcwd()).resolve() / "outputs" / "mlflow.db")


def resolve_uri(uri: Optional[str]) -> str:
    """tracking.uri if given, else $MLFLOW_TRACKING_URI, else a sqlite store under ./outputs/."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {redact(uri)} in a browser"
    return f"mlflow ui --backend-store-uri {shlex.quote(redact(uri))}"


def get_experiment_id(client, name: str, uri: str) -> str:
    """Get or create the experiment; a local store keeps its artifacts beside the database."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = Path(uri[len("sqlite:///"):]).parent.joinpath("mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{'model': {'hidden': 4}} -> {'model.hidden': 4}: MLflow params with dotted keys."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def _git_commit() -> Optional[str]:
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def run_tags(command: str) -> dict[str, str]:
    """Tags every bpexp run carries: how it was started and with which library versions."""
    tags = {
        "mlflow.source.name": f"bpexp {command}",
        "mlflow.source.type": "LOCAL",
        "bpexp.command": redact(" ".join(["bpexp", command, *map(shlex.quote, sys.argv[1:])])),
        **{f"version.{p}": _version(p) for p in ("bpexp", "torch", "optuna", "mlflow", "hydra-core")},
    }
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def start_run(client, experiment_id: str, name: str, tags: Mapping[str, str],
              parent_run_id: Optional[str] = None, start_time: Optional[int] = None) -> str:
    tags = {k: redact(str(v)) for k, v in tags.items()}
    tags["mlflow.runName"] = name
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=name).info.run_id


def end_run(client, run_id: str, status: str, reason: Optional[str] = None) -> None:
    """End a run; a FAILED or KILLED one carries its reason as the tag bpexp.error."""
    if reason:
        client.set_tag(run_id, "bpexp.error", redact(reason)[:5000])
    client.set_terminated(run_id, status)


def log_all(client, run_id: str, params: Mapping[str, Any] = (), metrics=(),
            tags: Mapping[str, Any] = ()) -> None:
    """Params, tags and metric rows [(key, value, step)] in as few log_batch calls as allowed."""
    from mlflow.entities import Metric, Param, RunTag

    p = [Param(k, redact(str(v))[:MAX_PARAM_LEN]) for k, v in dict(params).items()]
    t = [RunTag(k, redact(str(v))) for k, v in dict(tags).items()]
    now = int(time.time() * 1000)
    m = [Metric(k, float(v), now, int(s)) for k, v, s in metrics]
    client.log_batch(run_id, metrics=m[:MAX_ROWS], params=p[:100], tags=t[:100])
    for i in range(MAX_ROWS, len(m), MAX_ROWS):
        client.log_batch(run_id, metrics=m[i:i + MAX_ROWS])
    for i in range(100, max(len(p), len(t)), 100):
        client.log_batch(run_id, params=p[i:i + 100], tags=t[i:i + 100])


def weights_json(weights: Mapping[str, Any]) -> str:
    """Weights as JSON: readable anywhere, and loading it never executes code (unlike pickle)."""
    return json.dumps({k: np.asarray(v).tolist() for k, v in weights.items()})


def parse_weights(text: str) -> dict[str, np.ndarray]:
    data = json.loads(text)
    if not isinstance(data, dict) or set(data) != {"w1", "b1", "w2", "b2"}:
        raise ValueError("not a bpexp weights file (expected exactly the keys w1, b1, w2, b2)")
    return {k: np.asarray(v, dtype=np.float32) for k, v in data.items()}


def log_files(client, run_id: str, files: Mapping[str, bytes | str]) -> None:
    """Write {relative path: content} to a temporary folder and upload it in one call."""
    with tempfile.TemporaryDirectory() as tmp:
        for rel, content in files.items():
            f = Path(tmp, rel)
            f.parent.mkdir(parents=True, exist_ok=True)
            (f.write_bytes if isinstance(content, bytes) else f.write_text)(content)
        client.log_artifacts(run_id, tmp)
