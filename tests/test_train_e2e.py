"""`bpexp train` as a user runs it, read back through MlflowClient."""
from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from bpexp.recording.weights import parse_weights
from tests.conftest import hessian_eigenvalues, run_bpexp


def only_run(client: MlflowClient):
    runs = client.search_runs([client.get_experiment_by_name("bpexp").experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_train_records_everything(bpexp, tmp_path, local_store):
    r = bpexp("train", "train.epochs=600", "model.hidden=6", "train.lr=0.05")
    assert r.returncode == 0, r.stderr
    client = local_store()
    run = only_run(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_id in r.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/outputs/mlflow.db" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # no .hydra/ copy of the config
    p = run.data.params
    assert p["model.hidden"] == "6" and p["train.lr"] == "0.05" and p["train.epochs"] == "600"
    assert p["data.fn"] == "sin" and p["model.activation"] == "tanh" and p["train.seed"] == "99"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    steps = sorted(m.step for m in history)
    assert steps == [*range(0, 600, 6), 599]  # train.log_every=0: epochs // 100 apart, and the last epoch
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_loss")) == steps
    final = [m.value for m in history if m.step == 599][0]
    assert f"{final:.6g}" in r.stdout
    (data,) = run.inputs.dataset_inputs  # the run list's Dataset column
    assert data.dataset.name == "sin on [-5, 5], 20 points" and len(data.dataset.digest) == 16
    assert [(i.key, i.value) for i in data.tags] == [("mlflow.data.context", "training")]
    tags = run.data.tags
    assert tags["bpexp.command"].startswith("bpexp train")
    from importlib.metadata import version

    for pkg in ("torch", "optuna", "mlflow", "hydra-core"):  # the versions that ran, not "not installed"
        assert tags[f"version.{pkg}"] == version(pkg)
    files = {a.path for d in ("", "plots", "weights", "curves") for a in client.list_artifacts(run.info.run_id, d or None)}
    assert {"config.yaml", "plots/fit.svg", "plots/loss_curve.svg", "plots/sharpness.svg", "weights/initial.json",
            "weights/final.json", "curves/loss_curve.csv"} <= files
    client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl"))
    curve = (tmp_path / "dl" / "curves" / "loss_curve.csv").read_text().splitlines()
    assert curve[0] == "epoch,train_loss,test_loss,sharpness"
    # the file holds what the metric history holds, value for value (and the sharpness epochs)
    cells = [line.split(",") for line in curve[1:]]
    assert {int(c[0]): float(c[1]) for c in cells if c[1]} == {m.step: m.value for m in history}
    assert {int(c[0]) for c in cells} == {*steps, 200, 400}
    # Sharpness at epochs 0, 200, 400 and the last; at init, the top eigenvalue of the loss
    # Hessian of the recorded initial weights (float32 in training: 1e-4).
    sharp = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "sharpness"))
    assert [s for s, _ in sharp] == [0, 200, 400, 599]
    assert run.data.metrics["sharpness_init"] == sharp[0][1] and run.data.metrics["sharpness"] == sharp[-1][1]
    assert [float(line.split(",")[3]) for line in curve[1:] if line.split(",")[3]] == pytest.approx([v for _, v in sharp])
    from bpexp.training.data import make_dataset
    init = {k: torch.as_tensor(v, dtype=torch.float64)
            for k, v in parse_weights((tmp_path / "dl" / "weights" / "initial.json").read_text()).items()}
    data = make_dataset("sin", -5, 5, 20)
    assert sharp[0][1] == pytest.approx(hessian_eigenvalues(init, data.x.double(), data.y.double(), "tanh")[-1], rel=1e-4)
    w = parse_weights((tmp_path / "dl" / "weights" / "final.json").read_text())
    assert w["w1"].shape == (6, 1) and w["w2"].shape == (1, 6)
    fit = (tmp_path / "dl" / "plots" / "fit.svg").read_text()
    assert fit.startswith("<svg") and fit.count("<polyline") == 2 and fit.count("<circle") >= 20
    assert "hidden: 6" in (tmp_path / "dl" / "config.yaml").read_text()


def test_multirun_records_one_run_per_value(bpexp, local_store):
    r = bpexp("train", "-m", "train.lr=0.001,0.01,0.1", "train.epochs=50", "tracking.log_plots=false")
    assert r.returncode == 0, r.stderr
    client = local_store()
    runs = client.search_runs([client.get_experiment_by_name("bpexp").experiment_id])
    assert sorted(r.data.params["train.lr"] for r in runs) == ["0.001", "0.01", "0.1"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_the_experiment_opens_in_mlflows_model_training_view(bpexp, local_store):
    """MLflow 3 opens an experiment in its GenAI view unless its kind says otherwise: bpexp marks
    the experiments it makes, and one made before (without a kind) when it records there again;
    a kind someone else set stays."""
    assert bpexp("train", "train.epochs=20").returncode == 0
    client = local_store()
    assert client.get_experiment_by_name("bpexp").tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("older")  # as MLflow makes one: no kind
    mine = client.create_experiment("genai", tags={"mlflow.experimentKind": "genai_development"})
    assert bpexp("train", "train.epochs=20", "tracking.experiment=older").returncode == 0
    assert bpexp("train", "train.epochs=20", "tracking.experiment=genai").returncode == 0
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(mine).tags["mlflow.experimentKind"] == "genai_development"


def test_tracking_uri_from_environment(bpexp, tmp_path):
    uri = f"sqlite:///{tmp_path}/elsewhere.db"
    r = bpexp("train", "train.epochs=20", env={"MLFLOW_TRACKING_URI": uri})
    assert r.returncode == 0, r.stderr
    assert len(MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("bpexp").experiment_id])) == 1
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_divergence_is_recorded(bpexp, local_store):
    r = bpexp("train", "train.lr=5", "train.epochs=300")
    assert r.returncode == 0, r.stderr
    run = only_run(local_store())
    assert run.data.tags["bpexp.outcome"] == "diverged"
    assert int(run.data.tags["diverged_epoch"]) < 300
    assert "diverged at epoch" in r.stdout and "final train_loss" not in r.stdout


def test_failure_marks_the_run_failed(tmp_path, monkeypatch):
    """An exception while training ends the run FAILED, with the reason as a tag."""
    from bpexp.commands import train as train_module
    from bpexp.config.environment import check_tracking_uri
    from bpexp.config.schema import TrainAppConfig

    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(train_module, "train_population", boom)
    cfg = TrainAppConfig()
    with pytest.raises(RuntimeError):
        train_module.train(cfg, check_tracking_uri(cfg.tracking.uri))  # as run_checked calls it
    run = only_run(MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db"))
    assert run.info.status == "FAILED"
    assert "simulated crash" in run.data.tags["bpexp.error"]


def test_cfg_job_prints_the_config_from_any_directory(tmp_path):
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    r = run_bpexp("train", "--cfg", "job", "model.hidden=7", cwd=sub)
    assert r.returncode == 0, r.stderr
    assert "hidden: 7" in r.stdout and "lr: 0.01" in r.stdout
    assert not (sub / "outputs").exists()  # printing the config records nothing


@pytest.mark.parametrize("args", [["model.hidden=7", "--cfg", "job"], ["--cfg", "job", "model.hidden=7"],
                                  ["train.lr=0.02", "--cfg", "job", "model.hidden=7"]])
def test_flags_go_anywhere_among_the_overrides(tmp_path, args):
    """As Hydra takes them: `bpexp train model.hidden=7 --cfg job` (its parser alone would
    leave an override after a flag "unrecognized"); a bad key under --cfg is bpexp's one line."""
    r = run_bpexp("train", *args, cwd=tmp_path)
    assert r.returncode == 0 and "hidden: 7" in r.stdout, r.stderr
    bad = run_bpexp("train", "model.hiden=7", "--cfg", "job", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "bpexp train: error: model.hiden=7: Could not override 'model.hiden'. Key 'hiden' not in 'ModelConfig'"], bad.stderr


def test_a_multirun_flag_among_the_overrides(bpexp, local_store):
    r = bpexp("train", "train.lr=0.01,0.1", "-m", "train.epochs=20", "tracking.log_plots=false")
    assert r.returncode == 0, r.stderr
    client = local_store()
    runs = client.search_runs([client.get_experiment_by_name("bpexp").experiment_id])
    assert sorted(r.data.params["train.lr"] for r in runs) == ["0.01", "0.1"]
    assert {r.data.params["train.epochs"] for r in runs} == {"20"}


def test_a_trials_loss_figure_shows_each_seed_and_the_median_on_top():
    """plots/loss_curve.svg of a trial: every seed in a colour of its own (a diverged one red),
    the median drawn last, on top, and the legend beside the plot, never over a curve."""
    import re
    from dataclasses import replace

    from bpexp.config.schema import TrainAppConfig
    from bpexp.config.specs import member_of, train_spec
    from bpexp.recording import svg
    from bpexp.recording.run_record import config_tree, figures
    from bpexp.results.outcome import trial_outcome
    from bpexp.training.data import make_dataset
    from bpexp.training.population import train_population

    cfg = TrainAppConfig()
    cfg.model.hidden, cfg.train.lr, cfg.train.epochs = 8, 0.22, 300  # seed 103 diverges, 102 and 104 do not
    data = make_dataset("sin", -5, 5, 20)
    results = train_population([replace(member_of(cfg), seed=s) for s in (102, 103, 104)], data, train_spec(cfg.train))
    chart = figures(config_tree(cfg), results, trial_outcome(results, "train_loss"), data)["plots/loss_curve.svg"]
    strokes = re.findall(r'<polyline points="[^"]*" fill="none" stroke="(#\w+)" stroke-width="([\d.]+)"', chart)
    seeds = [color for color, _ in strokes[:3]]
    assert len(set(seeds)) == 3 and seeds[1] == "#d62728"  # seed 103 diverged: red
    assert strokes[-1] == ("#111111", "2.5")  # the median, last: on top
    plot_right = svg.W - svg.LEFT - svg.RIGHT - svg.LEGEND
    legend_x = [float(x) for x in re.findall(r'<text x="([\d.]+)" y="\d+" font-size="11">', chart)]
    assert legend_x and min(legend_x) > plot_right


def test_a_moved_project_folder_records_into_itself(tmp_path):
    """`outputs/` moved elsewhere: MLflow's store held its artifact locations by absolute path
    (the next run's files went back to the old place, recreated); they point at the new one."""
    first, moved = tmp_path / "first", tmp_path / "elsewhere" / "project"
    first.mkdir()
    assert run_bpexp("train", "train.epochs=50", cwd=first).returncode == 0
    moved.mkdir(parents=True)
    (first / "outputs").rename(moved / "outputs")
    r = run_bpexp("train", "train.epochs=50", cwd=moved)
    assert r.returncode == 0, r.stderr
    client = MlflowClient(f"sqlite:///{moved}/outputs/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("bpexp").experiment_id])
    assert len(runs) == 2 and all(client.list_artifacts(run.info.run_id) for run in runs)
    assert all(run.info.artifact_uri.startswith((moved / "outputs").as_uri()) for run in runs)
    assert not (first / "outputs").exists()


def test_a_folder_whose_name_reads_as_an_escape_is_itself(tmp_path):
    """SQLAlchemy reads %XX in a sqlite path as an escape and ? as options: a project in
    'a%20b?c' opened 'a b' and failed ("unable to open database file"); its stores are its own."""
    from bpexp.config.schema import storage_default
    from bpexp.runtime.stores import default_uri, sqlite_file

    folder = tmp_path / "a%20b?c"
    folder.mkdir()
    assert sqlite_file(storage_default(str(folder))) == folder / "outputs" / "optuna.db"
    r = run_bpexp("train", "train.epochs=20", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert (folder / "outputs" / "mlflow.db").exists() and not (tmp_path / "a b").exists()
    client = MlflowClient(default_uri(str(folder)))
    assert len(client.search_runs([client.get_experiment_by_name("bpexp").experiment_id])) == 1


def test_a_relative_sqlite_store_works_for_every_command(bpexp, tmp_path):
    """tracking.uri=sqlite:///rel.db (relative to the command's folder): train records there,
    reproduce answers an unknown run id, and the store is read as it is written."""
    r = bpexp("train", "train.epochs=20", "tracking.uri=sqlite:///rel.db")
    assert r.returncode == 0 and (tmp_path / "rel.db").is_file(), r.stderr
    r = bpexp("reproduce", "0" * 32, "--tracking-uri", "sqlite:///rel.db")
    assert r.returncode == 2 and "not found in sqlite:///rel.db" in r.stderr and r.stderr.count("\n") == 1, r.stderr
