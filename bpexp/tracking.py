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

import fcntl
import functools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np

MAX_ROWS = 1000  # MLflow's limit on metrics per log_batch call
MAX_PARAM_LEN = 6000
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)(?=@)")


def quiet_mlflow() -> None:
    """No progress bars or table-creation chatter from MLflow (call before importing it)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


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
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
    return dict(_run_tags(command, tuple(sys.argv[1:])))


@functools.lru_cache(maxsize=None)
def _run_tags(command: str, args: tuple[str, ...]) -> dict[str, str]:
    # Fixed for the life of the process, and costly (a git subprocess, package metadata):
    # worked out once, not once per trial.
    tags = {
        "mlflow.source.name": f"bpexp {command}",
        "mlflow.source.type": "LOCAL",
        "bpexp.command": redact(" ".join(["bpexp", command, *map(shlex.quote, args)])),
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
    """Weights written by weights_json; anything else is rejected with a clear error.

    A network of L hidden layers has w1, b1, ..., w{L+1}, b{L+1} in the seed's shapes:
    w_n [H_n, H_{n-1}] (H_0 = the inputs), b_n [H_n, 1], the last layer's H = 1.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a bpexp weights file (not JSON: {e.msg})") from None
    layers = len(data) // 2 if isinstance(data, dict) else 0
    names = {f"{k}{n}" for n in range(1, layers + 1) for k in "wb"}
    if layers < 2 or set(data) != names:
        raise ValueError("not a bpexp weights file (expected the keys w1, b1, w2, b2, ... in pairs)")
    try:
        w = {k: np.asarray(data[k], dtype=np.float32) for k in sorted(names, key=lambda k: (int(k[1:]), k))}
    except (TypeError, ValueError):
        raise ValueError("not a bpexp weights file (values must be arrays of numbers)") from None
    fan_in = w["w1"].shape[1] if w["w1"].ndim == 2 else 0
    for n in range(1, layers + 1):
        wn, bn = w[f"w{n}"], w[f"b{n}"]
        out = wn.shape[0] if wn.ndim == 2 else 0
        if not (fan_in >= 1 and out >= 1 and wn.shape == (out, fan_in) and bn.shape == (out, 1)
                and (n < layers or out == 1)):
            raise ValueError(f"not a bpexp weights file (w{n}, b{n}: shapes must be [H_out, H_in] and [H_out, 1], "
                             "one output)")
        fan_in = out
    return w


def torch_module(w: Mapping[str, np.ndarray], activation: str):
    """The network as a plain torch.nn.Sequential (Linear, act, ..., Linear), for export."""
    import torch

    act_module = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}[activation]
    layers = []
    for n in range(1, len(w) // 2 + 1):
        wn = w[f"w{n}"]
        lin = torch.nn.Linear(wn.shape[1], wn.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(wn))
            lin.bias.copy_(torch.from_numpy(w[f"b{n}"][:, 0]))
        layers += [lin, act_module()]
    return torch.nn.Sequential(*layers[:-1])  # no activation after the output layer


def log_files(client, run_id: str, files: Mapping[str, bytes | str]) -> None:
    """Write {relative path: content} to a temporary folder and upload it in one call."""
    with tempfile.TemporaryDirectory() as tmp:
        for rel, content in files.items():
            f = Path(tmp, rel)
            f.parent.mkdir(parents=True, exist_ok=True)
            (f.write_bytes if isinstance(content, bytes) else f.write_text)(content)
        client.log_artifacts(run_id, tmp)


def end_runs(client, run_ids, status: str) -> None:
    for run_id in run_ids:
        client.set_terminated(run_id, status)


# ------------------------------------------------------------------ a study's parent run
STUDY_ROLE = "bpexp.role"


def open_parent_run(client, experiment_id: str, known: Optional[str], study_name: str,
                    tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
    """The study's parent run, set RUNNING: the known one if it still exists, else a new one."""
    if known:
        try:
            run = client.get_run(known)
            if run.info.lifecycle_stage == "active":
                if run.info.status != "RUNNING":
                    client.update_run(known, status="RUNNING")
                return known
        except Exception:  # deleted for good, or from another store: make a new one
            pass
    run_id = start_run(client, experiment_id, f"study-{study_name}",
                       {**tags, STUDY_ROLE: "study", "optuna.study_name": study_name})
    log_all(client, run_id, params=params)
    return run_id


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


def settle_child_runs(client, parent_run_id: str, trial_states: Mapping[int, str],
                      dead_workers: Optional[set] = None) -> None:
    """Child runs left RUNNING by a dead worker follow their trial, Optuna's record:
    FINISHED if the trial was told (it completed before the kill), else KILLED.

    A run is settled only once its trial is no longer RUNNING and its worker (the run's tag
    bpexp.worker) is known dead: a live worker may be between telling a trial and ending its run.
    """
    for run in child_runs(client, parent_run_id, "attributes.status = 'RUNNING'"):
        number = int(run.data.tags.get("optuna.trial_number", -1))
        state = trial_states.get(number, "FAIL")
        if state == "RUNNING" or (dead_workers is not None and run.data.tags.get("bpexp.worker") not in dead_workers):
            continue
        try:
            client.set_tag(run.info.run_id, "optuna.trial_state", state)
            if state in ("COMPLETE", "PRUNED"):
                client.set_terminated(run.info.run_id, "FINISHED")
            else:
                end_run(client, run.info.run_id, "KILLED", "the worker stopped before the trial ended")
        except Exception:  # another worker settled it at the same moment
            continue


def record_study(client, parent_run_id: str, summary: Mapping[str, Any], register_as: Optional[str]) -> None:
    """Counts and best values as tags and metrics, the study's figures, a CSV of all trials,
    the best network. Every trial is shown as its verdict (bpexp/outcome.py) says."""
    from bpexp import plots

    trials, c, metric, keys = summary["trials"], summary["counts"], summary["metric"], summary["keys"]
    n = len(trials)
    tags = {f"best.{k}": v for k, v in summary["best_params"].items()}
    metrics = [(f"n_{k.replace(' ', '_')}", v, n) for k, v in c.items()]
    if summary["best_number"] is not None:
        tags["best.trial_number"] = summary["best_number"]
    log_all(client, parent_run_id, metrics=metrics, tags=tags)
    files: dict[str, Any] = {"trials.csv": trials_csv(trials, keys)}
    files.update(plots.study_figures(trials, keys, metric, summary["direction"], summary["importances"]))
    ok = [t for t in trials if t["outcome"] == "converged"]
    top = sorted(ok, key=lambda t: t["value"], reverse=summary["direction"] == "maximize")[:5]
    runs = {int(r.data.tags.get("optuna.trial_number", -1)): r for r in child_runs(
        client, parent_run_id, "attributes.status = 'FINISHED'")} if top else {}
    curves = []
    for t in top:
        if t["number"] in runs:
            hist = sorted(client.get_metric_history(runs[t["number"]].info.run_id, metric), key=lambda m: m.step)
            label = f"#{t['number']} " + " ".join(
                f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                for k, v in t["params"].items())
            curves.append((label, np.array([m.step for m in hist]), np.array([m.value for m in hist])))
    if curves:
        files["plots/top_trials_loss.png"] = plots.loss_plot(
            curves, f"{metric} of the top trials (median over seeds)", ylabel=metric)
    if summary["best_config"]:
        import yaml

        files["best_config.yaml"] = yaml.safe_dump(redact_tree(summary["best_config"]), sort_keys=False)
    log_files(client, parent_run_id, files)
    best = summary["best_number"]
    previous = client.get_run(parent_run_id).data.tags.get("best.model_trial")
    if best is not None and str(best) != previous and best in runs:
        log_best_model(client, parent_run_id, runs[best].info.run_id, summary["best_config"], register_as)
        client.set_tag(parent_run_id, "best.model_trial", best)


def trials_csv(trials, keys) -> str:
    """One row per trial: its verdict and value as everywhere else; no booleans (MLflow's CSV
    preview shows them blank), list values as their JSON text in one cell."""
    import csv
    import io

    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["number", "state", "outcome", "value", "diverged_seeds", *keys, "mlflow_run_id"])
    for t in trials:
        out.writerow([t["number"], t["state"], t["outcome"], "" if t["value"] is None else repr(t["value"]),
                      " ".join(map(str, t["diverged_seeds"])),
                      *(json.dumps(v) if isinstance(v := t["params"].get(k, ""), list) else v for k in keys),
                      t["run_id"]])
    return buf.getvalue()


def log_best_model(client, parent_run_id: str, best_run_id: str, config: Mapping, register_as: Optional[str]) -> None:
    """The best trial's network as an MLflow PyTorch model, with signature and input example."""
    import mlflow
    import mlflow.pytorch
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(best_run_id, "weights/final.json", tmp)
        w = parse_weights(Path(path).read_text())
    net = torch_module(w, config["model"]["activation"])
    d = config["data"]
    inputs = w["w1"].shape[1]
    if d.get("source", "function") == "function":
        example = np.linspace(d["x_min"], d["x_max"], 5, dtype=np.float32).reshape(-1, 1)
    else:  # a CSV's inputs: zeros of the right width (the signature is what matters)
        example = np.zeros((5, inputs), dtype=np.float32)
    with torch.no_grad():
        out = net(torch.from_numpy(example)).numpy()
    signature = mlflow.models.infer_signature(example, out)
    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run(run_id=parent_run_id):
        # Explicit requirements: inferring them costs seconds and finds nothing more here.
        mlflow.pytorch.log_model(net, name="best_model", signature=signature, input_example=example,
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                                 registered_model_name=register_as)
    mlflow.end_run()

