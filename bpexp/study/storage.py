"""A study's two homes: its Optuna storage, opened once per database even when workers start
together, and its one MLflow parent run. The study remembers the config it was created with
and refuses to mix in another one.
"""
from __future__ import annotations

import errno
import json
import time
import warnings
from typing import Any

import optuna

from bpexp.runtime import stores
from bpexp.recording import study_record
from bpexp.recording import tracking
from bpexp.config.schema import ConfigError, SweepAppConfig, storage_default
from bpexp.training.csv_data import file_copy
from bpexp.recording.recorder import Recorder
from bpexp.recording.run_record import config_tree, dataset_info
from bpexp.study.search_space import choices, make_pruner, make_sampler, searched
from bpexp.study.workers import GRACE_S, HEARTBEAT_S
from bpexp import names
from bpexp.runtime import redaction, relocation


# Searched keys fixed by a study, so that a resumed study never mixes two experiments.
FINGERPRINT_SWEEP_KEYS = ("search_space", "seeds", "metric")


def fingerprint(cfg: SweepAppConfig, data_sha256: str | None = None) -> dict:
    """What a study is: its fixed config, its search, and the content of its CSV file (a path
    alone would let a resumed study mix two datasets)."""
    tree = config_tree(cfg)
    fixed = {k: tree[k] for k in ("model", "data", "train")}
    fixed["train"].pop("device", None)
    if data_sha256:
        fixed["data"]["sha256"] = data_sha256
    fixed["sweep"] = {k: tree["sweep"][k] for k in FINGERPRINT_SWEEP_KEYS}
    return json.loads(json.dumps(fixed, sort_keys=True, default=str))


def tracking_home(cfg: SweepAppConfig) -> dict:
    """Where the study's MLflow records live: one store, one experiment, for its whole life."""
    return {"uri": _server(stores.resolved_uri(cfg.tracking.uri)), "experiment": cfg.tracking.experiment}


def _server(uri: str) -> str:
    """A tracking URI as a study's home: the server, not who logs in to it (a launcher's
    workers get the user and password in their environment, not in the URI)."""
    return redaction.redact(stores.split_credentials(uri)[0])


# ----------------------------------------------------------------------------- study
def open_study(cfg: SweepAppConfig, data_sha256: str | None = None) -> tuple[optuna.Study, bool]:
    """Create or load the study; True if this worker created it (and so owns its set-up).
    A resume with another config, other data, or another MLflow store or experiment is refused."""
    url = cfg.sweep.storage or storage_default()
    storage = open_storage(url)
    kwargs = dict(study_name=cfg.sweep.study_name, storage=storage, sampler=make_sampler(cfg.sweep), pruner=make_pruner(cfg.sweep, cfg.train.epochs))
    mine = fingerprint(cfg, data_sha256)
    try:
        # The study name is unique in the storage: of several workers starting at once exactly
        # one creates the study, and that one alone creates the MLflow parent run.
        study = optuna.create_study(direction="minimize", **kwargs)  # a loss, always
        with warnings.catch_warnings():  # experimental since 3.2, and what optuna-dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([str(cfg.sweep.metric)])  # the dashboard's axis, not "Objective 0"
        study.set_user_attr(names.CONFIG, mine)
        study.set_user_attr(names.TRACKING, tracking_home(cfg))
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kwargs)
    theirs = wait_for_attr(study, names.CONFIG)
    if theirs is not None and theirs.get("sweep", {}).get("direction") == "minimize":
        del theirs["sweep"]["direction"]  # recorded by studies made while sweep.direction existed (always a loss)
    if theirs is None:
        study.set_user_attr(names.CONFIG, mine)
    elif theirs != mine:
        key, old, new = first_difference(tracking.flatten(theirs), tracking.flatten(mine))
        if key == "data.sha256":
            raise ConfigError("data.path", cfg.data.path, f"its content changed since study '{cfg.sweep.study_name}' "
                              "was created: resume it with the same file or choose another sweep.study_name")
        raise ConfigError(key, new, f"study '{cfg.sweep.study_name}' was created with {key}={old!r}; "
                                    "resume it with the same config or choose another sweep.study_name")
    home, recorded = tracking_home(cfg), study.user_attrs.get(names.TRACKING)
    if recorded is None or _moved_here(study, recorded, home, url):
        study.set_user_attr(names.TRACKING, home)
    else:
        for field in ("uri", "experiment"):
            theirs = _server(recorded.get(field) or "") if field == "uri" else recorded.get(field)
            if theirs != home[field]:
                gone = field == "uri" and stores.sqlite_file(theirs) is not None and not stores.sqlite_file(theirs).exists()
                raise ConfigError(f"tracking.{field}", home[field], f"study '{cfg.sweep.study_name}' is recorded in "
                                  f"{field} {recorded.get(field)!r}" + (
                                      ", which is gone, and this store is not that one moved with its project folder (a "
                                      "folder moved whole resumes as the same study): give the study's store" if gone else
                                      ": resume it there (one study, one parent run)"))
    return study, False


def _moved_here(study: optuna.Study, recorded: dict, home: dict, storage_url: str) -> bool:
    """A project folder moved or copied whole (its Optuna and MLflow sqlite files, its
    artifacts): the same study, if the MLflow store here holds the study's parent run. Its
    artifact locations are rewritten to the new folder (runtime/relocation.py says why)."""
    old, new = stores.sqlite_file(recorded.get("uri") or ""), stores.sqlite_file(home["uri"])
    parent = study.user_attrs.get(names.PARENT_RUN_ID)
    if (old is None or new is None or old == new or not (old.is_absolute() and new.is_absolute())
            or stores.sqlite_file(storage_url) is None or parent is None
            or recorded.get("experiment") != home["experiment"] or not new.exists()):
        return False
    roots = relocation.moved_roots(old, new)
    if roots is None or not stores.sqlite_holds_run(new, parent, home["experiment"]):
        return False
    changed = relocation.relocate(new, *roots)
    print(f"bpexp sweep: study '{study.study_name}' was recorded in {roots[0]}, now in {roots[1]} (a moved or "
          f"copied folder): its MLflow store's artifact locations now point here ({changed} rewritten)", flush=True)
    return True


def open_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage, created once per database even when workers start together.

    Opening a new database creates Optuna's tables. A sqlite file is locked meanwhile
    (stores.local_store_lock). On a server (PostgreSQL, MySQL), workers that start at once
    race to create the same tables; a loser fails with a duplicate-key or duplicate-table
    error and simply opens the database again, now created. Anything else (a malformed URL,
    a server that is down, a folder we cannot write) is a ConfigError naming sweep.storage.
    """
    import random

    from sqlalchemy.exc import IntegrityError, ProgrammingError

    problem = stores.sqlite_file(url) and stores.folder_in_place(stores.sqlite_file(url))
    if problem:
        raise ConfigError("sweep.storage", redaction.redact(url), problem)
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings(), stores.local_store_lock(url):
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats, since 2.9
                stores.create_atomically(url, "sweep.storage", _create_storage, data_table="trials")
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                                  engine_kwargs=engine_kwargs(url))
        except stores.StoreError:
            raise
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())  # another worker is creating the tables
        except Exception as e:
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:  # a full disk, not a bad storage: exit 1
                raise
            reason = redaction.redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
            raise ConfigError("sweep.storage", redaction.redact(url), f"cannot open this Optuna storage: {reason}") from None
    raise AssertionError("unreachable")


def _create_storage(url: str) -> None:
    """A new, empty Optuna sqlite storage: a copy of the cached template for this Optuna
    version (stores.cached_template; the same for every new storage), else made by Optuna."""
    with stores.cached_template(f"optuna-{optuna.__version__}.db", stores.sqlite_file(url), "trials") as template:
        if template is None:
            optuna.storages.RDBStorage(url).engine.dispose()  # creates Optuna's tables


def quiet_drivers() -> None:
    """psycopg logs its own steps of an interrupted query ("query cancellation failed: ...") as
    warnings, and SQLAlchemy's pool a cursor it could not close on a connection an interrupted
    command had closed ("Error closing cursor", a traceback, seen once after SIGTERM), which
    Hydra's logging prints beside bpexp's one line: what failed is bpexp's to say."""
    import logging

    logging.getLogger("psycopg").setLevel(logging.ERROR)
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)


def engine_kwargs(url: str) -> dict:
    """Bounded waits on a database server: a connection attempt 5 s; on PostgreSQL also a
    statement or an idle transaction 60 s (server-side: a lock held by a frozen worker), and a
    link whose sent data goes unacknowledged for 30 s, or whose keepalives go unanswered for
    ~25 s, is dropped (libpq's tcp_user_timeout and keepalives: a network partition, a host
    gone). A server process stopped on this host (SIGSTOP) is still acknowledged by its kernel:
    there Ctrl-C and SIGTERM still act, within interrupts.HOLD_S (the waits inside psycopg run
    Python's signal handlers every 0.1 s)."""
    quiet_drivers()
    if url.startswith("postgresql"):
        return {"pool_pre_ping": True, "connect_args": {
            "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
            "keepalives_count": 3, "tcp_user_timeout": 30000,
            "options": "-c statement_timeout=60000 -c idle_in_transaction_session_timeout=60000"}}
    if url.startswith("mysql"):
        return {"connect_args": {"connect_timeout": 5}}
    return {}


def wait_for_attr(study: optuna.Study, key: str, timeout: float = 30.0) -> Any:
    """A study attribute its creator sets right after creating it; wait for it if the study is new."""
    deadline = time.monotonic() + timeout
    while True:
        value = study.user_attrs.get(key)
        if value is not None or study.get_trials(deepcopy=False) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def parent_run(recorder: Recorder, study: optuna.Study, creator: bool, cfg: SweepAppConfig, data, tags: dict) -> str:
    """The study's one MLflow parent run: made by the study's creator, found by everyone else."""
    known = None if creator else wait_for_attr(study, names.PARENT_RUN_ID)
    parent = recorder.call(study_record.open_parent_run, recorder.experiment_id.result(), known, study.study_name,
                           tags, parent_params(cfg)).result()
    if parent != known:
        study.set_user_attr(names.PARENT_RUN_ID, parent)
        recorder.call(tracking.log_dataset, parent, dataset_info(config_tree(cfg), data)).result()
        if data.sha256:  # read from a file: recorded once, here, not with every trial
            recorder.call(tracking.log_all, parent, tags={names.DATA_SHA256: data.sha256}).result()
            recorder.call(tracking.log_files, parent, file_copy(cfg.data.path)).result()
    return parent


def parent_params(cfg: SweepAppConfig) -> dict[str, Any]:
    """The study's params: the fixed config, and the search space as one param per searched
    key (search.train.lr = "float [0.0001, 1] log"), never a base value no trial used."""
    params = tracking.flatten(config_tree(cfg))
    for name in cfg.sweep.search_space:
        for k in [k for k in params if k.startswith(f"sweep.search_space.{name}.")]:
            del params[k]
    for key, p in searched(cfg.sweep.search_space):
        params.pop(key, None)
        if p.type == "categorical":
            params[f"search.{key}"] = "categorical " + json.dumps(choices(p))
        else:
            params[f"search.{key}"] = f"{p.type} [{p.low:g}, {p.high:g}]" + (" log" if p.log else "") + (
                f" step {p.step:g}" if p.step else "") + (f" x {p.unit}" if p.unit else "")
    return params


def first_difference(a: dict, b: dict) -> tuple[str, Any, Any]:
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            return k, a.get(k), b.get(k)
    return "", None, None


def dashboard_note(study: optuna.Study, text: str) -> None:
    """The study's answer as its note in optuna-dashboard (markdown, beside its charts), where
    optuna-dashboard is installed (pip install "bpexp[dashboard]"); it keeps notes in the study's
    storage in a format of its own, so it alone writes them."""
    save_note = _dashboard_save_note()
    if save_note is not None:
        save_note(study, text)


def _dashboard_save_note():
    """optuna-dashboard's own save_note, from its _note module alone (it imports only optuna):
    importing the package runs its web app's imports, Optuna's importance module and through
    it scikit-learn, 1.6 s of a sweep's end, for one write. The package import is the fallback."""
    import importlib.util

    spec = importlib.util.find_spec("optuna_dashboard")  # finds it; runs nothing
    if spec is None:
        return None
    try:
        path = next(iter(spec.submodule_search_locations or ())) + "/_note.py"
        note = importlib.util.spec_from_file_location("optuna_dashboard._note", path)
        module = importlib.util.module_from_spec(note)
        note.loader.exec_module(module)
        return module.save_note
    except Exception:  # laid out otherwise in another release
        from optuna_dashboard import save_note

        return save_note
