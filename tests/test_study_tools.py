"""`bpexp lr-find` and `bpexp compare` as a user runs them, read back through MlflowClient."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from bpexp.config.schema import LrFindAppConfig
from bpexp.training.data import make_dataset
from bpexp.study.range_test import range_test


def test_range_test_finds_where_the_seeds_gd_blows_up():
    """The seed's network under plain GD: the loss falls as the lr ramps up, then blows up;
    the suggestion sits below the blow-up and in the range where a sweep finds its best lr."""
    cfg = LrFindAppConfig()
    found = range_test(cfg, make_dataset("sin", -5, 5, 20))
    end = found["end"]
    assert 0 < end < cfg.lr_find.epochs and found["blow_up_lr"] is not None
    assert found["median"][end] > cfg.lr_find.stop_factor * found["lowest_loss"]
    assert found["lowest_loss"] < found["median"][0] / 2  # the loss did fall before blowing up
    assert 0.05 < found["suggested_lr"] < found["blow_up_lr"] < 1.0
    lrs = found["lrs"]
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(10.0) and (np.diff(lrs) > 0).all()


def test_lr_find_records_its_run(bpexp, local_store):
    r = bpexp("lr-find", "lr_find.epochs=300", "lr_find.seeds=2", "lr_find.divide_by=2")
    assert r.returncode == 0, r.stderr
    suggested = float(re.search(r"suggested train.lr = (\S+)", r.stdout).group(1))
    client = local_store()
    (run,) = client.search_runs([client.get_experiment_by_name("bpexp").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["bpexp.role"] == "lr-find"
    assert float(run.data.tags["bpexp.suggested_lr"]) == pytest.approx(suggested, rel=1e-3)
    assert float(run.data.tags["bpexp.lowest_loss_lr"]) == pytest.approx(2 * suggested, rel=1e-3)
    assert run.data.params["lr_find.epochs"] == "300"
    assert len(client.get_metric_history(run.info.run_id, "lr_find_loss")) > 50
    files = {a.path for d in ("plots", "curves") for a in client.list_artifacts(run.info.run_id, d)}
    assert files == {"plots/lr_find.svg", "curves/lr_find.csv"}


def test_lr_find_predicts_the_stable_lr_from_sharpness(bpexp, local_store):
    """lr_find=sharpness: for each width, activation and seed, 2 / lambda_max of the initial
    network (the loss Hessian's, as autograd builds it); their median per width and activation
    printed and recorded on one run with its figure and CSV."""
    import csv
    import statistics

    from bpexp.training.network import init_weights
    from tests.conftest import hessian_eigenvalues

    r = bpexp("lr-find", "lr_find=sharpness", "lr_find.widths=[1,4,[3,2]]", "lr_find.activations=[tanh,relu]",
              "lr_find.seeds=2")
    assert r.returncode == 0, r.stderr
    data = make_dataset("sin", -5, 5, 20)
    x, y = data.x.double(), data.y.double()
    client = local_store()
    (run,) = client.search_runs([client.get_experiment_by_name("bpexp").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["bpexp.role"] == "lr-find"
    with open(client.download_artifacts(run.info.run_id, "stability_prediction.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 2 * 2
    for width, name in ((1, "1"), (4, "4"), ([3, 2], "3x2")):
        for act in ("tanh", "relu"):
            want = [2 / hessian_eigenvalues({k: v.double() for k, v in init_weights(width, s).items()}, x, y, act)[-1]
                    for s in (99, 100)]
            got = [float(row["predicted_lr"]) for row in rows if row["activation"] == act
                   and row["width"] == (str(width) if isinstance(width, int) else "[3, 2]")]
            assert got == pytest.approx(want, rel=1e-4)
            median = statistics.median(want)
            assert run.data.metrics[f"predicted_lr_h{name}_{act}"] == pytest.approx(median, rel=1e-4)
    assert re.search(r"^  4 +" + re.escape(f"{run.data.metrics['predicted_lr_h4_tanh']:.3g}"), r.stdout, re.M)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {"plots/stability_prediction.svg"}


def test_compare_a_grid_of_train_runs(bpexp, tmp_path, local_store):
    r = bpexp("train", "-m", "train.lr=0.01,0.1,3.0", "model.hidden=2,4", "train.seed=1,2", "train.epochs=300",
              "tracking.log_plots=false", "tracking.log_model=false")
    assert r.returncode == 0, r.stderr
    r = bpexp("compare", "--top", "5")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if re.match(r"^\d+ +train-", line)]
    assert len(rows) == 5 and "... the top 5 of 12 runs (--top N for more; every run: table.csv)" in r.stdout
    assert rows[0][-1] == "converged" and all(row[3] != "3" for row in rows)  # lr 3 diverges: ranked last
    # lr 0.1 converges and lr 3 diverges for both widths (both seeds): the bracket is [0.1, 3]
    assert "  2 hidden: stable up to lr 0.1 (4 converged), a seed diverges from lr 3 (2 runs)" in r.stdout
    assert "  4 hidden: stable up to lr 0.1 (4 converged), a seed diverges from lr 3 (2 runs)" in r.stdout
    out = re.search(r"in (outputs/compare-\w+)/", r.stdout).group(1)
    assert {p.name for p in (tmp_path / out).iterdir()} == {
        "loss_curves.png", "loss_vs_lr.png", "divergence_boundary.png", "seed_spread.png", "table.csv"}
    table = (tmp_path / out / "table.csv").read_text().splitlines()
    assert len(table) == 1 + 12  # every run, ranked; the report run itself is not one of them
    client = local_store()
    report = client.get_run(out.split("-")[1])
    assert report.data.tags["bpexp.role"] == "report" and report.info.status == "FINISHED"
    assert len(client.list_artifacts(report.info.run_id, "compare")) == 5
    again = bpexp("compare")  # the first report run is not compared...
    assert again.returncode == 0 and "12 runs compared" in again.stdout
    # ...and the same comparison again writes over the same report run: no run more per call
    assert f"on MLflow run {report.info.run_id}" in again.stdout
    assert len(client.search_runs([report.info.experiment_id], "tags.`bpexp.role` = 'report'")) == 1
    other = bpexp("compare", "--metric", "test_loss")  # another comparison: a report of its own
    assert other.returncode == 0 and f"on MLflow run {report.info.run_id}" not in other.stdout
    ids = [r.info.run_id for r in client.search_runs([report.info.experiment_id]) if "bpexp.role" not in r.data.tags]
    named = bpexp("compare", *ids[:3], ids[0], ids[0])  # a run named three times is ranked once
    assert named.returncode == 0 and "3 runs compared" in named.stdout, named.stderr


@pytest.mark.slow
def test_compare_a_sweep_by_its_parent(bpexp, tmp_path, local_store):
    r = bpexp("sweep", "sweep.n_trials=6", "sweep.seeds=2", "train.epochs=200", "sweep.progress=false",
              "tracking.log_plots=false", "tracking.log_model=false")
    assert r.returncode == 0, r.stderr
    parent = re.search(r"MLflow parent run (\w+)", r.stdout).group(1)
    r = bpexp("compare", "--parent", parent)
    assert r.returncode == 0, r.stderr
    assert "6 runs compared" in r.stdout
    best = local_store().get_run(parent).data.tags["best.trial_number"]
    first = next(line for line in r.stdout.splitlines() if line.startswith("1 "))
    assert first.split()[1] == f"t{int(best):03d}"


def test_compare_unknown_experiment_or_store_fails_cleanly(bpexp, local_store, tmp_path):
    r = bpexp("compare", "--experiment", "nope")
    assert r.returncode == 2 and "no MLflow store there" in r.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # asking made none
    local_store().search_experiments()  # the store exists now, without experiment 'nope'
    r = bpexp("compare", "--experiment", "nope")
    assert r.returncode == 2 and "experiment 'nope' not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # An unknown run id in a local store is answered before torch or MLflow is imported (they
    # were ~4 s of the ~5.6 s the answer took; 0.33 s now).
    probe = "import sys\nfrom bpexp import cli\ntry:\n    cli.main(['reproduce', '0' * 32])\nexcept SystemExit as e:\n" \
            "    print(e.code, 'torch' in sys.modules, 'mlflow' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    assert r.stdout.split() == ["2", "False", "False"] and "not found" in r.stderr, r.stderr


@pytest.mark.slow
def test_sweep_over_optimizers_and_schedules(bpexp, tmp_path, local_store):
    r = bpexp("sweep", "sweep=lr_optimizer", "sweep.n_trials=12", "sweep.seeds=1", "train.epochs=300",
              "sweep.progress=false", "tracking.log_plots=false", "tracking.log_model=false")
    assert r.returncode == 0, r.stderr
    import optuna

    study = optuna.load_study(study_name="lr_optimizer", storage=f"sqlite:///{tmp_path}/outputs/optuna.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 12 and len({t.params["train.optimizer"] for t in done}) > 1
    client = local_store()
    children = client.search_runs([client.get_experiment_by_name("bpexp").experiment_id],
                                  "tags.`optuna.study_name` = 'lr_optimizer'")
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children if "mlflow.parentRunId" in c.data.tags}
    for t in done:  # each child run holds its trial's optimizer and schedule: reproducible as is
        p = by_number[t.number].data.params
        assert (p["train.optimizer"], p["train.schedule"]) == (t.params["train.optimizer"], t.params["train.schedule"])


def test_reproduce_a_run_killed_before_its_weights_is_one_line(bpexp, tmp_path, local_store):
    client = local_store()
    exp = client.create_experiment("bpexp")
    run = client.create_run(exp, run_name="killed early")
    client.set_terminated(run.info.run_id, "KILLED")
    r = bpexp("reproduce", run.info.run_id)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "cannot be reproduced: config.yaml: not recorded on this run (status KILLED)" in r.stderr


def test_compare_an_experiment_where_every_run_diverged(bpexp, tmp_path):
    """Nothing to draw a loss from is no error: the table, the bracket and the figures, with the
    diverged runs marked and no value scale to read a stand-in off."""
    for lr, seed in ((5, 99), (8, 99), (5, 1)):  # lr 5 on two seeds: a seed spread of diverged seeds only
        r = bpexp("train", f"train.lr={lr}", f"train.seed={seed}", "train.epochs=100", "tracking.log_plots=false")
        assert r.returncode == 0, r.stderr
    r = bpexp("compare")
    assert r.returncode == 0, r.stderr
    assert "3 runs compared" in r.stdout and "a seed diverged in every run (3, from lr 5)" in r.stdout
    out = re.search(r"in (outputs/compare-\w+)/", r.stdout).group(1)
    assert {"loss_vs_lr.png", "loss_curves.png", "divergence_boundary.png", "seed_spread.png"} <= {
        p.name for p in (tmp_path / out).iterdir()}


def test_the_importance_figure_needs_no_scikit_learn(tmp_path):
    """The recorder imports Optuna's importance module without scikit-learn (1.45 s of its CPU
    a study, for a fANOVA evaluator bpexp does not use: bpexp/recording/importances.py); the
    importances are PED-ANOVA's, as the package imported as usual gives them, and scikit-learn
    still imports afterwards."""
    import json

    import optuna

    make = """
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
for _ in range(40):
    t = study.ask()
    x, n = t.suggest_float("x", 1e-3, 1, log=True), t.suggest_int("n", 1, 8)
    study.tell(t, (x - 0.2) ** 2 + 0.001 * n)
"""
    code = make + """
import json, sys
from bpexp.recording import importances, study_record
study_record.warm_up(None, *study_record.warm_ups(True, False))  # the recorder's step during a study
held_out = "sklearn" not in sys.modules
got = importances.param_importances(study.trials)
import sklearn.ensemble  # still importable
print(json.dumps([held_out, got]))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    held_out, got = json.loads(r.stdout.strip().splitlines()[-1])
    assert held_out
    scope: dict = {}
    exec(make, scope)  # the same trials, here, where optuna.importance is imported as usual
    expected = optuna.importance.get_param_importances(
        scope["study"], evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    assert got == pytest.approx(expected) and got["x"] > got["n"]
    # A module that needs scikit-learn (as a later Optuna's importance package might) is imported as usual.
    needs = tmp_path / "needs_sklearn.py"
    needs.write_text("import sklearn.ensemble\nFOREST = sklearn.ensemble.RandomForestRegressor\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from bpexp.recording.importances import imported_without_sklearn\n"
            "print(imported_without_sklearn('needs_sklearn').FOREST.__name__)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["RandomForestRegressor"], r.stderr
