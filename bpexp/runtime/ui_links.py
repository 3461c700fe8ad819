"""Where the MLflow UI shows a store's runs: the command that opens it, and the links bpexp
prints and records (never with a URL's password: runtime/redaction.py). Nothing here imports
MLflow."""
from __future__ import annotations

import shlex

from bpexp.runtime.redaction import redact
from bpexp.runtime.stores import is_tracking_server


def ui_command(uri: str) -> str:
    if is_tracking_server(uri):
        return f"open {redact(uri)} in a browser"
    return f"mlflow ui --backend-store-uri {shlex.quote(redact(uri))}"


MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_base(uri: str) -> str:
    """The MLflow UI's address for this store: the server itself, or `mlflow ui`'s default.
    Credentials never go into a printed or recorded link."""
    if is_tracking_server(uri):
        from urllib.parse import urlsplit, urlunsplit

        u = urlsplit(uri)
        return urlunsplit((u.scheme, u.hostname + (f":{u.port}" if u.port else ""), u.path.rstrip("/"), "", ""))
    return MLFLOW_UI


# MLflow 3.x's UI (3.17 read here) takes its view from this query parameter, else from the
# view its user last chose (localStorage), else GenAI; the experiment tag bpexp also sets
# (names.EXPERIMENT_KIND) is read only where the UI's view switcher is off. So every link
# bpexp prints or records carries the parameter.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def experiment_url(uri: str, experiment_id: str) -> str:
    """The experiment's run list, in the model-training view."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}?{MODEL_TRAINING_VIEW}"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page, in the model-training view."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"
