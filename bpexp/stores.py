"""Where records go: the tracking store's URI, whether it can be used, how to open it safely,
and how a URL is shown without its password.

Used by the main process before anything runs (it never imports MLflow itself) and by the
recorder process; nothing here imports MLflow or torch.
"""
from __future__ import annotations

import os
import re
import shlex
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from filelock import FileLock



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


def resolved_uri(uri: Optional[str]) -> str:
    """tracking.uri if given, else $MLFLOW_TRACKING_URI, else a sqlite store under ./outputs/."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def resolve_uri(uri: Optional[str]) -> str:
    """As resolved_uri, creating a local store's folder."""
    uri = resolved_uri(uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def store_problem(uri: str, timeout: float = 5.0) -> Optional[str]:
    """Why this tracking store cannot be used, or None. Quick: one HTTP request, no retries.

    For a server, one authenticated API call with the credentials MLflow itself will use
    ($MLFLOW_TRACKING_USERNAME / _PASSWORD, or a token), so that a server that is down or
    wrong credentials are found before any training, not after it.
    """
    if uri.startswith(("http://", "https://")):
        import base64
        import urllib.error
        import urllib.request

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
    if uri.startswith("sqlite:///"):
        return writable_problem(Path(uri[len("sqlite:///"):]).parent)
    return None


def writable_problem(folder: Path) -> Optional[str]:
    """Why files cannot be written in `folder` (created if missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create the folder {folder}: {e.strerror or e}"
    if not os.access(folder, os.W_OK):
        return f"the folder {folder} is not writable"
    return None


@contextmanager
def local_store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a sqlite database while opening it.

    Opening a new sqlite store creates its tables (MLflow runs its Alembic migrations, Optuna
    its schema); two processes doing that at once corrupt the file (seen with 4 workers).
    Other URIs (a server, PostgreSQL) need no lock: their servers serialise that work.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):  # filelock: portable, unlike fcntl
        yield


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {redact(uri)} in a browser"
    return f"mlflow ui --backend-store-uri {shlex.quote(redact(uri))}"


MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_base(uri: str) -> str:
    """The MLflow UI's address for this store: the server itself, or `mlflow ui`'s default.
    Credentials never go into a printed or recorded link."""
    if uri.startswith(("http://", "https://")):
        from urllib.parse import urlsplit, urlunsplit

        u = urlsplit(uri)
        return urlunsplit((u.scheme, u.hostname + (f":{u.port}" if u.port else ""), u.path.rstrip("/"), "", ""))
    return MLFLOW_UI


def experiment_url(uri: str, experiment_id: str) -> str:
    """The experiment's run list in the model-training view (MLflow 3 opens in its GenAI view
    otherwise: the query parameter switches it, the experiment tag alone does not)."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}?workflowType=machine_learning"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs/{run_id}"
