"""MLflow client calls: experiments, runs, their params, metrics, tags and files.

Designed around MLflow's costs: every value of a run goes in a handful of calls (one
`log_batch`, which MLflow's client splits to its limits; all files of a run in one
`log_artifacts`), never one call per epoch. Anything recorded passes through
`redaction.redact`, so a password in a storage or tracking URI never reaches MLflow.

The functions taking a `client` run in the recorder process (bpexp/recording/recorder.py); the main
process never imports MLflow itself: mlflow is imported inside the functions that need it.
"""
from __future__ import annotations

import functools
import os
import shlex
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from bpexp.runtime import relocation, stores
from bpexp.runtime.failpoints import fault
from bpexp.runtime.redaction import redact
from bpexp import names

MAX_PARAM_LEN = 6000  # MLflow refuses a longer param value


# Every wait on a tracking server is bounded. MLflow's own defaults (7 retries with growing
# backoff, 120 s a request) make a dead server look like a hang for 11+ minutes; with these a
# request to a server that is down fails in about 4 s, to one that hangs in about 35 s.
# Set in the environment to choose otherwise (MLflow reads them when it sends a request).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def configure_mlflow() -> None:
    """Bounded HTTP waits, and no progress bars or table-creation chatter from MLflow (call
    before importing it)."""
    for k, v in {**HTTP_DEFAULTS, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        os.environ.setdefault(k, v)
    import logging

    # CRITICAL: it logs a database error with its traceback (e.g. a full disk, 8 times in a
    # row) before raising it; bpexp says what failed in one line (runtime/failures.py).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def open_store(uri: str, experiment: str):
    """(MlflowClient, experiment id) for this store and experiment, the store created whole if
    new (stores.create_atomically); a store or experiment that cannot be used is a StoreError."""
    from mlflow.tracking import MlflowClient

    with stores.local_store_lock(uri):
        stores.create_atomically(uri, "tracking.uri", create_store, data_table="runs")
        db = stores.sqlite_file(uri)
        moved = db and relocation.moved_from(db)
        if moved:  # a project folder moved whole: its runs' files are where the store is now
            relocation.relocate(db, *moved)
        client = MlflowClient(uri)
        try:
            client.search_experiments(max_results=1)
        except Exception as e:
            raise stores.StoreError("tracking.uri", redact(uri), "cannot open this MLflow store: "
                                    + redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)) from None
        return SharedRunsClient(client), get_experiment_id(client, experiment, uri)


class SharedRunsClient:
    """An MlflowClient whose writes are made once more when another process wrote the same new
    key of a run first. Workers started by hand each record the study's end on the one shared
    parent run, at about the same moment; MLflow's SQL store writes a tag by reading whether its
    key exists and then inserting it, so two first writes of one key race and the second fails
    ('duplicate key value' on PostgreSQL, 'UNIQUE constraint failed' on sqlite), its
    transaction rolled back whole. The same write again finds the key and updates it. Seen in 1
    of 15 test runs of three workers on PostgreSQL; MLflow has no upsert to ask for instead."""

    WRITES = frozenset({"set_tag", "log_batch", "log_param", "log_metric", "set_terminated"})

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name: str):
        attr = getattr(self.client, name)
        if name not in self.WRITES:
            return attr

        @functools.wraps(attr)
        def write(*args, **kwargs):
            for attempt in range(3):
                try:
                    return attr(*args, **kwargs)
                except Exception as e:
                    if attempt == 2 or not _lost_a_race(e):
                        raise
        return write


def _lost_a_race(e: BaseException) -> bool:
    text = str(e)
    return "duplicate key value" in text or "UNIQUE constraint failed" in text


def check_readable(uri: str) -> None:
    """A StoreError naming --tracking-uri unless the store at `uri` can be read (reproduce,
    compare), checked quickly and without MLflow's import: a server must answer, a local store
    exist and be whole."""
    configure_mlflow()
    problem = stores.read_problem(uri)
    if problem:
        raise stores.StoreError("--tracking-uri", redact(uri), problem)


def read_client(uri: str):
    """An MlflowClient to read the store at `uri`, checked first (check_readable)."""
    check_readable(uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient(stores.use_credentials(uri))


def create_store(tmp_uri: str) -> None:
    """A new, empty MLflow sqlite store at tmp_uri. MLflow's migrations take ~1.7 s; their
    result, the same for every new store of one MLflow version, is kept as a template in the
    user's cache (stores.cached_template) and copied in ~30 ms. Only the Default experiment
    differs from store to store: its artifact location and times are set as MLflow sets them."""
    import mlflow
    from mlflow.tracking import MlflowClient

    tmp = stores.sqlite_file(tmp_uri)
    with stores.cached_template(f"mlflow-{mlflow.__version__}.db", tmp, "runs") as template:
        if template is None:  # no template yet (or no cache): migrate, and the template is kept
            MlflowClient(tmp_uri).search_experiments(max_results=1)
            return
    import sqlite3

    now = int(time.time() * 1000)
    con = sqlite3.connect(tmp)
    with con:  # as MLflow's _create_default_experiment: <./mlruns resolved>/0, created now
        con.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                    "WHERE experiment_id = 0", (os.path.join(os.path.abspath("mlruns"), "0"), now, now))
    con.close()


def get_experiment_id(client, name: str, uri: str) -> str:
    """Get or create the experiment, marked as model training (names.EXPERIMENT_KIND) so that
    MLflow's UI opens it in its model-training view, also an experiment made before bpexp set
    it; a kind someone else set is left alone. A local store keeps its artifacts beside the
    database."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise stores.StoreError("tracking.experiment", name, "is deleted in this store: restore it "
                                    f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or choose another name")
        if names.EXPERIMENT_KIND not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, names.EXPERIMENT_KIND, names.MODEL_TRAINING)
        return exp.experiment_id
    location = None
    if stores.sqlite_file(uri):
        location = stores.sqlite_file(uri).parent.joinpath("mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={names.EXPERIMENT_KIND: names.MODEL_TRAINING})
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


def run_tags(command: str, args: Sequence[str] = ()) -> dict[str, str]:
    """Tags every bpexp run carries: the command line (`bpexp COMMAND ARGS`, passwords hidden)
    and the library versions it ran with."""
    return dict(_run_tags(command, tuple(args)))


@functools.lru_cache(maxsize=None)
def _run_tags(command: str, args: tuple[str, ...]) -> dict[str, str]:
    # Fixed for the life of the process, and costly (package metadata):
    # worked out once, not once per trial.
    from bpexp.runtime.liveness import THIS_WORKER

    tags = {
        "mlflow.source.name": f"bpexp {command}",
        names.WORKER: THIS_WORKER,  # host:pid, for settling the run if the process dies (settle_dead_runs)
        "mlflow.source.type": "LOCAL",
        names.COMMAND: redact(" ".join(["bpexp", command, *map(shlex.quote, args)])),
        **{f"version.{p}": _version(p) for p in ("bpexp", "torch", "optuna", "mlflow", "hydra-core")},
    }
    return tags


@functools.lru_cache(maxsize=None)
def context_tags() -> dict[str, str]:
    """What MLflow's run-context registry knows of this process: the user, the git commit of
    the code that runs (when it runs from a git checkout), ... Worked out once per process."""
    from mlflow.tracking.context.registry import resolve_tags

    return resolve_tags({})


def start_run(client, experiment_id: str, name: str, tags: Mapping[str, str],
              parent_run_id: Optional[str] = None, start_time: Optional[int] = None) -> str:
    # bpexp's own tags win (its source name); a git remote's URL may hold a token: redacted too
    tags = {k: redact(str(v)) for k, v in {**context_tags(), **tags}.items()}
    tags["mlflow.runName"] = name
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=name).info.run_id


def end_run(client, run_id: str, status: str, reason: Optional[str] = None) -> None:
    """End a run; a FAILED or KILLED one carries its reason as the tag bpexp.error."""
    if reason:
        client.set_tag(run_id, names.ERROR, redact(reason)[:5000])
    client.set_terminated(run_id, status)


def log_all(client, run_id: str, params: Mapping[str, Any] = (), metrics=(),
            tags: Mapping[str, Any] = ()) -> None:
    """Params, tags and metric rows [(key, value, step)] in one log_batch (MLflow's client
    splits it to the store's limits: 1000 metrics, 100 params and tags a request)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, int(s)) for k, v, s in metrics],
                     params=[Param(k, redact(str(v))[:MAX_PARAM_LEN]) for k, v in dict(params).items()],
                     tags=[RunTag(k, redact(str(v))) for k, v in dict(tags).items()])


def log_files(client, run_id: str, files: Mapping[str, bytes | str]) -> None:
    """Write {relative path: content} to a temporary folder and upload it in one call."""
    fault("log_files")
    with tempfile.TemporaryDirectory() as tmp:
        for rel, content in files.items():
            f = Path(tmp, rel)
            f.parent.mkdir(parents=True, exist_ok=True)
            (f.write_bytes if isinstance(content, bytes) else f.write_text)(content)
        client.log_artifacts(run_id, tmp)


def settle_dead_runs(client, experiment_id: str) -> list[str]:
    """End KILLED the runs of this experiment left RUNNING by a process of this host that is
    gone (a `bpexp train` or `lr-find` killed with kill -9; a sweep's parent and trials are
    settled by the next sweep on that study, which knows their trials). Returns their ids."""
    from bpexp.runtime.liveness import worker_alive

    settled = []
    for run in search_all(client, experiment_id, "attributes.status = 'RUNNING'"):
        tags = run.data.tags
        worker = tags.get(names.WORKER)
        if worker is None or names.STUDY_NAME in tags or worker_alive(worker):
            continue
        end_run(client, run.info.run_id, "KILLED", f"its process ({worker}) stopped before the run ended")
        settled.append(run.info.run_id)
    return settled


def end_runs(client, run_ids, status: str) -> None:
    for run_id in run_ids:
        client.set_terminated(run_id, status)


FAILED_TRIAL = {names.TRIAL_STATE: "FAIL", names.OUTCOME: "failed"}  # as Optuna and trials.csv have it


def end_failed_trial_runs(client, run_ids, reason: str, status: str = "KILLED") -> None:
    """End the runs of trials Optuna holds as FAIL (stopped by a signal, failed as stale, their
    recording failed): their tags say so, as Optuna and trials.csv do, not the state and verdict
    they were created with (the metrics stay: what was measured before the trial was failed)."""
    for run_id in run_ids:
        log_all(client, run_id, tags=FAILED_TRIAL)
        end_run(client, run_id, status, reason)


def search_all(client, experiment_id: str, query: str = "") -> list:
    """Every run of the experiment that matches the query, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def child_runs(client, parent_run_id: str, extra: str = "") -> list:
    exp = client.get_run(parent_run_id).info.experiment_id
    return search_all(client, exp, f"tags.`mlflow.parentRunId` = '{parent_run_id}'" + (f" and {extra}" if extra else ""))




def log_dataset(client, run_id: str, dataset: dict) -> None:
    """The data a run trained on as its MLflow dataset input (the run list's Dataset column):
    run_record.dataset_info's name, digest, source, schema and profile."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    client.log_inputs(run_id, [DatasetInput(Dataset(**dataset), [InputTag("mlflow.data.context", "training")])])
