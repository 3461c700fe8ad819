"""Where records go: the tracking store's URI, whether it can be used, how to open it safely
(a URL's password is hidden by runtime/redaction.py). Where the MLflow UI shows a store:
runtime/ui_links.py.

Used by the main process before anything runs (it never imports MLflow itself) and by the
recorder process; nothing here imports MLflow or torch.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from filelock import FileLock

from bpexp.runtime.failpoints import failpoint
from bpexp.runtime.redaction import redact, split_userinfo


class StoreError(Exception):
    """A tracking or Optuna store that cannot be used as it is (damaged, deleted, another
    study's); str() is one line naming the config key. Pickles, so the recorder process can
    raise it to the main process."""

    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"{key}={value!r}: {reason}")

    def __reduce__(self):
        return type(self), (self.key, self.value, self.reason)


def sqlite_uri(path) -> str:
    """A sqlite store's URI: sqlite:/// and the file's path (absolute: sqlite:////tmp/x.db).
    SQLAlchemy (which Optuna and MLflow open it with) reads %XX in the path as an escape and
    a ? as the start of options, so those two are escaped: a folder named 'a%20b' is itself."""
    return SQLITE + str(path).replace("%", "%25").replace("?", "%3F")


def sqlite_file(uri: str) -> Optional[Path]:
    """The file of a sqlite:/// URI, as SQLAlchemy opens it (escapes decoded), or None for any
    other store."""
    from urllib.parse import unquote

    return Path(unquote(uri[len(SQLITE):].split("?", 1)[0])) if uri.startswith(SQLITE) else None


SQLITE = "sqlite:///"


def default_uri(cwd: Optional[str] = None) -> str:
    return sqlite_uri(Path(cwd or os.getcwd()).resolve() / "outputs" / "mlflow.db")


def resolved_uri(uri: Optional[str]) -> str:
    """tracking.uri if given, else $MLFLOW_TRACKING_URI, else a sqlite store under ./outputs/."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def resolve_uri(uri: Optional[str]) -> str:
    """As resolved_uri, creating a local store's folder."""
    uri = resolved_uri(uri)
    if sqlite_file(uri):
        sqlite_file(uri).parent.mkdir(parents=True, exist_ok=True)
    return uri


def is_tracking_server(uri: str) -> bool:
    """Whether a tracking URI is an MLflow tracking server (http/https), not a store of its own
    (a database or folder this process opens)."""
    return uri.startswith(("http://", "https://"))


def split_credentials(uri: str) -> tuple[str, Optional[str], Optional[str]]:
    """http://user:pass@host:5000 -> ("http://host:5000", "user", "pass"): MLflow's client takes
    a server's credentials from $MLFLOW_TRACKING_USERNAME/_PASSWORD, not from the URI."""
    if not is_tracking_server(uri):
        return uri, None, None
    from urllib.parse import unquote

    scheme, rest = uri.split("://", 1)
    userinfo, rest = split_userinfo(rest)
    if not userinfo:
        return uri, None, None
    user, _, pw = userinfo.partition(":")
    return f"{scheme}://{rest[1:]}", unquote(user) or None, unquote(pw) or None


_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_given: dict = {}  # the credentials this process's environment held before use_credentials


def use_credentials(uri: str) -> str:
    """The URI without credentials; credentials it held become MLflow's environment variables
    (in this process: the recorder's, or the main process's for its probe). Otherwise those
    the process was started with: one multirun job's user and password never go to the next
    job's server (a kept recorder serves every job)."""
    if not _given:
        _given.update({k: os.environ.get(k) for k in _CREDENTIALS})
    bare, user, pw = split_credentials(uri)
    for k, v in zip(_CREDENTIALS, (user or _given[_CREDENTIALS[0]], pw or _given[_CREDENTIALS[1]])):
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    return bare


def store_problem(uri: str, timeout: float = 5.0) -> Optional[str]:
    """Why this tracking store cannot be used, or None. Quick: one HTTP request, no retries.

    For a server, one authenticated API call with the credentials MLflow itself will use
    ($MLFLOW_TRACKING_USERNAME / _PASSWORD, or a token), so that a server that is down or
    wrong credentials are found before any training, not after it.
    """
    if is_tracking_server(uri):
        import base64
        import urllib.error
        import urllib.request

        uri = use_credentials(uri)
        req = urllib.request.Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
        user, pw = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if user and pw:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())
        elif token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                r.read()
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                who = f"user {user!r}" if user else "no credentials ($MLFLOW_TRACKING_USERNAME/_PASSWORD unset)"
                return f"the tracking server refused {who} (HTTP {e.code})"
            return f"the tracking server answered HTTP {e.code} {e.reason}"
        except (urllib.error.URLError, OSError) as e:
            return f"no MLflow tracking server answers there ({getattr(e, 'reason', e)})"
        return None
    path = sqlite_file(uri)
    if path:
        return sqlite_problem(path)
    if uri.startswith("file:"):
        return ("a file:// store (MLflow's deprecated FileStore) is not supported: use a sqlite:/// "
                "URI (the default, ./outputs/mlflow.db) or a tracking server")
    if "://" not in uri:
        return "not a URI (sqlite:///PATH, http(s)://HOST:PORT, postgresql://...)"
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in DATABASES:
        return (f"{scheme}:// is not a tracking store MLflow opens (sqlite:///PATH, http(s)://HOST:PORT, "
                "or a database: postgresql, mysql, mssql)")
    return None


# The SQL databases MLflow's tracking store (SQLAlchemy) opens, beside sqlite and a server.
DATABASES = ("postgresql", "mysql", "mssql", "databricks")


def sqlite_problem(path: Path) -> Optional[str]:
    """Why a sqlite store cannot be made or opened at `path`, or None (MLflow's and Optuna's)."""
    return folder_in_place(path) or writable_problem(path.parent)


def folder_in_place(path: Path) -> Optional[str]:
    """Why a sqlite store cannot be at `path` because a folder is (MLflow's and Optuna's), or None."""
    return f"{path} is a folder, not a sqlite database file" if path.is_dir() else None


def read_problem(uri: str) -> Optional[str]:
    """Why records cannot be read from this store, or None (for reproduce and compare)."""
    path = sqlite_file(uri)
    if path is not None:
        if not path.is_file():
            return "no MLflow store there (run a bpexp command first, or give --tracking-uri)"
        state = sqlite_state(path, "runs")
        return None if state == "ok" else f"not a usable MLflow store ({state})"
    return store_problem(uri)


def writable_problem(folder: Path) -> Optional[str]:
    """Why files cannot be written in `folder` (created if missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create the folder {folder}: {e.strerror or e}"
    if not os.access(folder, os.W_OK):
        return f"the folder {folder} is not writable"
    try:  # access() says yes to root everywhere, /proc included: make something there
        import tempfile

        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".bpexp-check-"))
    except OSError as e:
        return f"cannot create anything in the folder {folder}: {e.strerror or e}"
    return None


def create_atomically(uri: str, key: str, create, data_table: str) -> None:
    """Make a new sqlite store all at once: `create(tmp_uri)` builds it in a temporary file
    beside it (MLflow's and Optuna's schema migrations take seconds), which then takes the
    store's name in one step (a hard link). A kill -9 at any moment leaves no store or a whole one,
    never a half-migrated one that no later command can open. Hold local_store_lock.

    A store half made by an older bpexp (tables left by an interrupted migration, no run or
    trial in it) is made again; one with data in it is refused in one line naming `key`."""
    path = sqlite_file(uri)
    if path is None:
        return
    for leftover in path.parent.glob(path.name + ".creating-*"):  # a creation killed midway
        leftover.unlink(missing_ok=True)
    if path.exists():
        state = sqlite_state(path, data_table)
        if state == "ok":
            return
        if state != "unfinished":
            raise StoreError(key, redact(uri), f"is not a usable store ({state}); move the file away "
                                               f"or point {key} elsewhere")
        path.unlink()
    tmp = path.with_name(f"{path.name}.creating-{os.getpid()}")
    try:
        create(sqlite_uri(tmp))
    except BaseException:  # nothing half made left behind (a kill -9 leaves it to the next command)
        tmp.unlink(missing_ok=True)
        raise
    failpoint("store-made")  # made, not yet in place: where a kill -9 would leave the most behind
    try:  # a hard link never replaces a store another program (mlflow ui) made meanwhile
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        os.replace(tmp, path)
    tmp.unlink(missing_ok=True)


@contextmanager
def cached_template(name: str, target: Path, data_table: str) -> Iterator[Optional[Path]]:
    """Copy the cached template `name` to `target` and yield it; or, with none cached, yield
    None for the caller to build `target`, which then becomes the template (written whole,
    under a lock: concurrent first commands make it once). Without a usable cache folder
    ($XDG_CACHE_HOME or ~/.cache, then bpexp/), yield None and keep nothing."""
    import shutil

    try:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bpexp"
        template = folder / name
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(template) + ".lock", timeout=60)
        lock.acquire()
    except (OSError, TimeoutError, RuntimeError):  # RuntimeError: no home folder to be found
        yield None
        return
    try:
        try:
            cached = template.is_file() and sqlite_state(template, data_table) == "ok"
            if cached:
                shutil.copyfile(template, target)
        except OSError as e:
            target.unlink(missing_ok=True)  # a partial copy is no store to build on ("malformed" later)
            if e.errno == errno.ENOSPC:  # building it instead would fill the same disk
                raise
            cached = False
        if cached:
            yield template
            return
        yield None  # the caller builds target
        try:
            if target.is_file() and sqlite_state(target, data_table) == "ok":
                tmp = template.with_name(f"{template.name}.{os.getpid()}")
                shutil.copyfile(target, tmp)
                os.replace(tmp, template)
        except OSError:  # a full or read-only cache: nothing kept, the store is made all the same
            pass
    finally:
        lock.release()


def sqlite_state(path: Path, data_table: str) -> str:
    """"ok", "unfinished" (its creation was cut short and it holds no data), or what is wrong."""
    import sqlite3

    try:
        # Read-write, although it only reads: a process killed mid-write leaves a hot journal,
        # which sqlite rolls back on the next open, and a read-only open cannot.
        con = sqlite3.connect(path, timeout=10)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            versioned = "alembic_version" in tables and con.execute("SELECT count(*) FROM alembic_version").fetchone()[0]
            if versioned and not any(t.startswith("_alembic_tmp_") for t in tables):
                return "ok"
            rows = con.execute(f"SELECT count(*) FROM {data_table}").fetchone()[0] if data_table in tables else 0
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        if "not a database" not in str(e) and "malformed" not in str(e):
            raise  # locked, read-only, I/O: not a verdict on the store
        return f"not a database: {e}"
    return "unfinished" if rows == 0 else "an interrupted schema upgrade; run `mlflow db upgrade` or `optuna storage upgrade` on it"


def sqlite_read(path: Path, query: str, args: tuple = ()) -> Optional[list]:
    """The rows of a query on the sqlite database at `path`, opened read-only; None if it
    cannot be read (not a database, not that schema, locked past 10 s)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(query, args).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None


def sqlite_holds_run(path: Path, run_id: str, experiment: Optional[str] = None) -> Optional[bool]:
    """Whether the MLflow sqlite store at `path` holds run `run_id` (in the experiment named
    `experiment`, if given); None if it cannot tell. Read with sqlite itself: `bpexp reproduce`
    asks this first, so that an unknown run id is answered without importing MLflow (its
    module and its store's: ~2.7 s here); a moved study's store is recognised by its parent run
    (runtime/relocation.py)."""
    if experiment is None:
        rows = sqlite_read(path, "SELECT 1 FROM runs WHERE run_uuid = ?", (run_id,))
    else:
        rows = sqlite_read(path, "SELECT 1 FROM runs JOIN experiments ON runs.experiment_id = experiments.experiment_id "
                                 "WHERE runs.run_uuid = ? AND experiments.name = ?", (run_id, experiment))
    return None if rows is None else bool(rows)


@contextmanager
def local_store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a sqlite database while opening it.

    Opening a new sqlite store creates its tables (MLflow runs its Alembic migrations, Optuna
    its schema); two processes doing that at once corrupt the file (seen with 4 workers).
    Other URIs (a server, PostgreSQL) need no lock: their servers serialise that work.
    """
    if not sqlite_file(uri):
        yield
        return
    path = sqlite_file(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):  # filelock: portable, unlike fcntl
        yield
