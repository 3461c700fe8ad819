"""The study's best and recommended networks as MLflow models on its parent run (made here, in
the recorder process)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from bpexp.names import NOTE
from bpexp.recording.study_note import model_note
from bpexp.recording.weights import parse_weights, torch_module
from bpexp.results.summary import StudySummary


def log_best_model(client, parent_run_id: str, best_run_id: str, summary: StudySummary,
                   register_as: Optional[str]) -> None:
    """The best trial's network as an MLflow PyTorch model, with signature and input example.
    The model says which trial it is: its params are the trial's number, value and searched
    values, and it is logged at the trial's step, so that MLflow links it to the parent's
    best_value at that step (the trial's value; at step 0 it would show trial #0's)."""
    log_trial_model(client, parent_run_id, best_run_id, "best_model", summary.best_number, summary.best_config,
                    {summary.metric: repr(summary.best_value), **summary.best_params}, register_as,
                    model_note(summary, False, best_run_id))


def describe_best_model(client, parent_run_id: str, summary: StudySummary) -> None:
    """best_model's description once more, now that the re-check has made its recommendation:
    best_model is logged before the re-check, when the recommended trial is not known yet."""
    exp = client.get_run(parent_run_id).info.experiment_id
    for m in client.search_logged_models([exp], filter_string=f"source_run_id = '{parent_run_id}' AND name = 'best_model'"):
        if m.params.get("trial_number") == str(summary.best_number):
            client.set_logged_model_tags(m.model_id, {NOTE: model_note(summary, False, m.params["mlflow_run_id"])})


def log_recommended_model(client, parent_run_id: str, summary: StudySummary) -> None:
    """The recommended trial's network (bpexp/study/recheck.py) as the MLflow model
    `recommended_model`, its params the trial's number, its median, mean and failed seeds over
    the re-check's seeds and its searched values: beside `best_model` (the best value on the
    study's own seeds), both named for what they are in the Models tab."""
    n = summary.recommended_number
    r = summary.recheck[n]
    log_trial_model(client, parent_run_id, r.run_id, "recommended_model", n, summary.recommended_config,
                    {f"recheck_{summary.metric}": repr(r.value), f"recheck_{summary.metric}_mean": repr(r.mean),
                     "recheck_seeds_failed": f"{r.failed} of {len(r.seeds)}", **r.params}, None,
                    model_note(summary, True, r.run_id))


def log_trial_model(client, parent_run_id: str, run_id: str, name: str, number: int, config: dict, params: dict,
                    register_as: Optional[str], note: str) -> None:
    """A trial's network (its run's weights/final.json) as the MLflow PyTorch model `name` on
    the parent run, at the trial's step, with the trial's number, run id and config as params
    and `note` as its description (the Models tab's page)."""
    import mlflow
    import mlflow.pytorch
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "weights/final.json", tmp)
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
        info = mlflow.pytorch.log_model(net, name=name, signature=signature, input_example=example,
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                                 registered_model_name=register_as, step=number,
                                 params={"trial_number": number, "mlflow_run_id": run_id, **params,
                                         "model.hidden": json.dumps(config["model"]["hidden"]),
                                         "model.activation": config["model"]["activation"],
                                         "train.lr": repr(config["train"]["lr"])})
    client.set_logged_model_tags(info.model_id, {NOTE: note})
    mlflow.end_run()
