"""A recorded run as `bpexp reproduce` reads it from MLflow: its files, tags and metrics as
plain data (`Stored`), read in a process of its own (recording/recorder.reader) while the
command's process imports torch. This module imports neither torch nor the modules that train;
files are size- and type-checked before they are read (a FIFO, a symlink, a huge file is refused).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bpexp import names
from bpexp.recording import tracking
from bpexp.runtime import redaction
from bpexp.training.csv_data import file_sha256


class Refused(Exception):
    """Why a run cannot be reproduced (one line), and the exit status that says so."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


@dataclass
class Stored:
    """What MLflow holds of the run, as plain data: read in the reader process (read_stored)."""

    run_id: str
    name: str
    tags: dict
    metrics: dict
    files: dict  # config.yaml, weights/initial.json, weights/final.json, curves/loss_curve.csv: their text
    metric: str  # what its value is of: its study's sweep.metric (a trial), else train_loss
    note: Optional[str]  # what to say first (a study's parent: which of its trials is reproduced)


FILES = ("config.yaml", "weights/initial.json", "weights/final.json", "curves/loss_curve.csv")


MAX_ARTIFACT_BYTES = 64 * 2**20  # a recorded file larger than this was not written by bpexp


def read_artifact(client, run, name: str, tmp: str) -> str:
    """A recorded file's text. In a local store, a file that is a symlink or not a regular file
    (a FIFO, /dev/zero) is refused before it is read; anywhere, one too large to be bpexp's."""
    import stat
    from urllib.parse import unquote, urlparse

    root = run.info.artifact_uri
    if root.startswith("file:") or root.startswith("/"):
        base = unquote(urlparse(root).path) if root.startswith("file:") else root
        src = os.path.join(base, name)
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            raise LookupError(name) from None
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is a symlink or not a regular file in the artifact store")
        # Every folder on the way from the run's folder down is the store's own, not a link to
        # a folder elsewhere (whose files would be read, and named in errors, as the run's).
        folders = [os.path.dirname(base), base, *(os.path.join(base, *name.split("/")[:i])
                                                   for i in range(1, name.count("/") + 1))]
        if any(os.path.islink(f) for f in folders):
            raise ValueError("lies under a symlinked folder in the artifact store")
        if st.st_size > MAX_ARTIFACT_BYTES:
            raise ValueError(f"is {st.st_size} bytes, too large to be a bpexp file")
    try:
        local = client.download_artifacts(run.info.run_id, name, tmp)
    except Exception:  # MlflowException: not recorded (a run killed before its files)
        raise LookupError(name) from None
    if os.path.getsize(local) > MAX_ARTIFACT_BYTES:
        raise ValueError(f"is {os.path.getsize(local)} bytes, too large to be a bpexp file")
    return Path(local).read_text(encoding="utf-8")


def find_run(client, run_id: str, uri: str) -> tuple[str, Any, Optional[str]]:
    """(run id, run, what to say) of the network to reproduce: the run itself, or a study
    parent's best trial."""
    try:
        run = client.get_run(run_id)
    except Exception as e:
        raise Refused(f"error: run {run_id!r} not found in {redaction.redact(uri)} ({type(e).__name__})") from None
    role = run.data.tags.get(names.ROLE)
    if role == "study":  # a sweep's parent: its best trial (best value on the study's own seeds; the
        # recommendation, re-checked on fresh seeds, is tag recommended.trial_number: reproduce that run by its id)
        best = run.data.tags.get("best.trial_number")
        child = [r for r in tracking.child_runs(client, run_id, "attributes.status = 'FINISHED'")
                 if r.data.tags.get(names.TRIAL_NUMBER) == best] if best is not None else []
        if not child:
            raise Refused(f"error: run {run_id} is the parent of study '{run.data.tags.get(names.STUDY_NAME)}', "
                          "which has no best trial recorded yet")
        return child[0].info.run_id, child[0], (
            f"run {run_id} is the parent of study '{run.data.tags.get(names.STUDY_NAME)}': "
            f"reproducing its best trial #{best}, run {child[0].info.run_id}")
    if role is not None:  # an lr-find run, a compare report: no one network to train again
        raise Refused(f"error: run {run_id} is a {role} run ({names.ROLE}={role}), not a trained network: "
                      "reproduce a train run, a sweep's trial or its parent")
    return run_id, run, None


def unreadable(run_id: str, name: str, e: BaseException) -> Refused:
    """A recorded file that fails its checks, in one line."""
    reason = "not a text file (a pickle?)" if isinstance(e, UnicodeDecodeError) else str(e)
    return Refused(f"error: run {run_id} cannot be reproduced: {name}: {reason}")


def read_stored(uri: str, run_id: str, tmp: str) -> Stored:
    """The run's files, tags and metrics (in the reader process: recorder.reader)."""
    client = tracking.read_client(uri)
    run_id, run, note = find_run(client, run_id, uri)
    files = {}
    for name in FILES:
        try:
            files[name] = read_artifact(client, run, name, tmp)
        except LookupError:
            raise unreadable(run_id, name, OSError(f"not recorded on this run (status {run.info.status})")) from None
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            raise unreadable(run_id, name, e) from None
    metric = "train_loss"
    parent = run.data.tags.get("mlflow.parentRunId")
    if parent:  # a sweep's trial: its value is of its study's metric
        try:
            metric = client.get_run(parent).data.params.get("sweep.metric", metric)
        except Exception:
            pass
    return Stored(run_id, run.info.run_name, dict(run.data.tags), dict(run.data.metrics), files, metric, note)


def download_data(uri: str, runs: tuple, name: str, sha: Optional[str], tmp: str) -> Optional[str]:
    """The first of these runs' copies of a CSV file whose SHA-256 is `sha`, downloaded under
    tmp; None if none (in the reader process)."""
    client = tracking.read_client(uri)
    for run_id in runs:
        if run_id:
            try:
                local = client.download_artifacts(run_id, name, tmp)
            except Exception:  # not on this run
                continue
            if file_sha256(local) == sha:
                return local
    return None
