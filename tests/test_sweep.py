"""`bpexp sweep` as a user runs it, read back through Optuna and MlflowClient."""
from __future__ import annotations

import csv
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time

import optuna
from mlflow.tracking import MlflowClient
import pytest
from optuna.trial import TrialState

from bpexp.results.outcome import TRAINED, verdict_of
from bpexp.training.population import Member, MemberResult
from tests.conftest import check_invariants, load, run_bpexp

SMALL = ["train.epochs=200", "sweep.progress=false", "tracking.log_plots=true"]


@pytest.mark.slow
def test_sweep_records_parent_and_children(tmp_path):
    r = run_bpexp("sweep", "sweep.n_trials=6", "sweep.seeds=2", "sweep.batch_size=4", *SMALL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study, client, parent, children = check_invariants(tmp_path, 6)
    assert len(children) == 6
    # A set batch size overlaps from the first batch: trials 4-5 were asked before 0-3 were told.
    t = study.trials
    assert t[4].datetime_start < min(x.datetime_complete for x in t[:4])
    assert parent.info.status == "FINISHED"
    assert parent.info.run_id in r.stdout and "optuna-dashboard sqlite:///" in r.stdout
    # best.* tags and best_value, kept current on the parent
    assert float(parent.data.tags["best.train.lr"]) == pytest.approx(study.best_params["train.lr"])
    assert int(parent.data.tags["best.model.hidden"]) == study.best_params["model.hidden"]
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.params["sweep.n_trials"] == "6" and parent.data.params["train.epochs"] == "200"
    assert parent.data.params["search.train.lr"] == "float [0.1, 3] log x lr_find"
    arts = {a.path for d in (None, "plots") for a in client.list_artifacts(parent.info.run_id, d)}
    assert {"trials.csv", "best_config.yaml", "plots/optimization_history.png",
            "plots/objective_vs_train.lr.png", "plots/heatmap_train.lr_x_model.hidden.png",
            "plots/param_importances.png", "plots/top_trials_loss.png"} <= arts
    digests = {r.inputs.dataset_inputs[0].dataset.digest for r in [parent, *children]}  # one dataset, on every run
    assert len(digests) == 1 and parent.inputs.dataset_inputs[0].dataset.name == "sin on [-5, 5], 20 points"
    check_best_model(tmp_path, client, parent, children, study)
    csv = client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path / "dl"))
    assert len(open(csv).read().strip().splitlines()) == 1 + len(study.trials)
    by_number = {t.number: t for t in study.trials}
    for c in children:
        t = by_number[int(c.data.tags["optuna.trial_number"])]
        assert c.data.tags["optuna.study_name"] == "lr_hidden"
        assert c.data.tags["optuna.trial_state"] == t.state.name
        assert float(c.data.params["train.lr"]) == pytest.approx(t.params["train.lr"])
        assert int(c.data.params["model.hidden"]) == t.params["model.hidden"]
        # the default lr is searched in units of the range test's suggestion (bpexp/study/lr_units.py)
        suggested = t.user_attrs["bpexp.suggested_lr"]
        assert t.params["train.lr"] == t.params["train.lr / lr_find"] * suggested
        assert c.data.tags["bpexp.suggested_lr"] == f"{suggested:.6g}"
        assert c.data.tags["bpexp.outcome"] == verdict_of(t)
        if verdict_of(t) == "converged":
            assert c.data.metrics["objective"] == t.value
            seeds = [c.data.metrics["train_loss_seed_99"], c.data.metrics["train_loss_seed_100"]]
            assert c.data.metrics["train_loss"] == t.value == (seeds[0] + seeds[1]) / 2
            assert c.data.metrics["train_loss_spread"] == pytest.approx(max(seeds) - min(seeds))
            history = client.get_metric_history(c.info.run_id, "train_loss")
            assert sorted(m.step for m in history) == [*range(0, 200, 2), 199]  # every 2 epochs, and the last
        files = {a.path for d in (None, "plots", "weights") for a in client.list_artifacts(c.info.run_id, d)}
        assert {"config.yaml", "plots/fit.svg", "plots/loss_curve.svg", "weights/final.json"} <= files


def check_best_model(tmp_path, client, parent, children, study):
    """The best trial's network, logged on the parent as an MLflow PyTorch model, predicts
    exactly what the best child's recorded final weights compute; so does the recommended
    trial's, `recommended_model`, when the re-check recommends another trial."""
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    models = {m.name: m for m in mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id],
                                                             output_format="list",
                                                             filter_string=f"source_run_id = '{parent.info.run_id}'")}
    recommended = study.user_attrs.get("bpexp.recommended")
    assert set(models) == {"best_model"} | ({"recommended_model"} if recommended not in (None, study.best_trial.number)
                                            else set())
    # it says which trial it is, its config and its value (the parent's best_value at that trial)
    best_trial = study.best_trial
    best = models["best_model"]
    assert best.params["trial_number"] == str(best_trial.number)
    assert best.params["train_loss"] == repr(best_trial.value)
    assert best.params["train.lr"] == repr(best_trial.params["train.lr"])
    assert [(m.key, m.value, m.step) for m in best.metrics] == [("best_value", best_trial.value, best_trial.number)]
    note = best.tags["mlflow.note.content"]  # its description in the Models tab
    assert note.startswith(f"### best_model: trial #{best_trial.number} of study 'lr_hidden'") and repr(best_trial.value) in note
    if recommended == best_trial.number:
        assert "It is also the recommended network" in note
    check_model_predicts(tmp_path, client, best, children, best_trial.number)
    if "recommended_model" in models:
        m, rc = models["recommended_model"], study.user_attrs["bpexp.recheck"][str(recommended)]
        assert m.params["trial_number"] == str(recommended) and m.params["recheck_train_loss"] == repr(rc["value"])
        assert m.tags["mlflow.note.content"].startswith(f"### recommended_model: trial #{recommended} of study")
        assert f"study recommends trial #{recommended} (`recommended_model`" in note
        assert m.params["recheck_seeds_failed"] == f"{len(rc['diverged_seeds']) + len(rc['stuck_seeds'])} of {len(rc['seeds'])}"
        check_model_predicts(tmp_path, client, m, children, recommended)


def check_model_predicts(tmp_path, client, model, children, number):
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch

    from bpexp.training.network import forward, stack
    from bpexp.recording.weights import parse_weights

    info = mlflow.models.get_model_info(model.model_uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    net = mlflow.pytorch.load_model(model.model_uri)
    child = [c for c in children if int(c.data.tags["optuna.trial_number"]) == number][0]
    w = parse_weights(open(client.download_artifacts(child.info.run_id, "weights/final.json", str(tmp_path / model.name))).read())
    x = torch.linspace(-5, 5, 7)
    expected, _ = forward(stack([{k: torch.from_numpy(v) for k, v in w.items()}]), x, "tanh")
    got = net(x.reshape(-1, 1)).detach().numpy()[:, 0]
    assert np.allclose(got, expected[0].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_automatic_batches_tell_the_first_trials_before_asking_more(tmp_path):
    """Automatic batches: TPE's 8 random start-up trials as one batch, then 4 trials at a time
    until sweep.sequential_trials, each batch told before the next is asked (the sampler learns
    from each); then one overlapped batch."""
    r = run_bpexp("sweep", "sweep.n_trials=15", "sweep.seeds=1", "sweep.sequential_trials=12",
                  "tracking.log_model=false", *SMALL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study, _, _, children = check_invariants(tmp_path, 15)
    t = sorted(study.trials, key=lambda x: x.number)
    told = lambda trials: max(x.datetime_complete for x in trials)  # noqa: E731
    asked = lambda trials: min(x.datetime_start for x in trials)  # noqa: E731
    one_batch = lambda trials: max(x.datetime_start for x in trials) < min(x.datetime_complete for x in trials)  # noqa: E731
    assert one_batch(t[0:8]) and one_batch(t[8:12]) and one_batch(t[12:15])
    assert told(t[0:8]) <= asked(t[8:12]) and told(t[8:12]) <= asked(t[12:15])
    assert len(children) == 15


@pytest.mark.parametrize("sampler, plans", [
    ("tpe", {0: (8, False), 4: (4, False), 8: (4, False), 28: (4, False), 32: (48, True)}),
    ("gp", {0: (10, False), 10: (4, False), 32: (48, True)}),
    ("random", {0: (48, True)}),  # reads no result: nothing to learn early
    ("grid", {0: (48, True)}),
])
def test_batch_plan_trains_the_samplers_blind_trials_as_one_batch(sampler, plans):
    from bpexp.config.schema import SweepConfig
    from bpexp.study.search_space import blind_trials
    from bpexp.study.batches import batch_plan

    blind = blind_trials(sampler)
    s = SweepConfig(sampler=sampler, seeds=1)  # the plan is policy: the sweep's own settings, no Hydra
    assert {n: (batch_plan(s, blind, n).trials, batch_plan(s, blind, n).overlapped) for n in plans} == plans
    assert batch_plan(SweepConfig(batch_size=5), blind, 0) == batch_plan(SweepConfig(batch_size=5), blind, 40)


@pytest.mark.slow
def test_resume_tops_up_and_reuses_the_parent(tmp_path):
    args = ["sweep.seeds=1", "sweep.batch_size=3", "tracking.log_plots=false", "tracking.log_model=false", *SMALL]
    assert run_bpexp("sweep", "sweep.n_trials=4", *args, cwd=tmp_path).returncode == 0
    _, _, parent1, _ = check_invariants(tmp_path, 4)
    r = run_bpexp("sweep", "sweep.n_trials=7", *args, cwd=tmp_path)
    assert r.returncode == 0 and "moved" not in r.stdout, r.stderr
    _, _, parent2, children = check_invariants(tmp_path, 7)
    assert parent2.info.run_id == parent1.info.run_id and len(children) == 7
    assert parent2.data.tags["bpexp.n_trials"] == "7" and parent2.data.params["sweep.n_trials"] == "4"
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    points = {k: len(client.get_metric_history(parent2.info.run_id, k)) for k in parent2.data.metrics}
    r = run_bpexp("sweep", "sweep.n_trials=7", *args, cwd=tmp_path)  # nothing left to do: says so, writes nothing
    assert r.returncode == 0 and "trained trials (sweep.n_trials=7) and their record: nothing to do" in r.stdout
    assert len(load(tmp_path).trials) == 7
    assert {k: len(client.get_metric_history(parent2.info.run_id, k)) for k in parent2.data.metrics} == points
    assert f"MLflow parent run {parent2.info.run_id}" in r.stdout


@pytest.mark.slow
def test_resume_with_another_config_is_refused(tmp_path):
    args = ["sweep.seeds=1", "sweep.n_trials=2", "tracking.log_plots=false", "tracking.log_model=false", *SMALL]
    assert run_bpexp("sweep", *args, cwd=tmp_path).returncode == 0
    r = run_bpexp("sweep", *args, "data.fn=cos", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "data.fn='cos'" in r.stderr and "study_name" in r.stderr
    assert len(load(tmp_path).trials) == 2
    # The project folder moved whole: the same study. MLflow's sqlite store holds its artifact
    # locations as absolute paths; they are rewritten to the new folder, nothing points back.
    old, moved = str(tmp_path / "outputs"), tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(tmp_path / "outputs", moved / "outputs")
    r = run_bpexp("sweep", *args, "sweep.n_trials=3", cwd=moved)
    assert r.returncode == 0 and "(a moved or copied folder)" in r.stdout, r.stderr
    _, _, parent, children = check_invariants(moved, 3)
    client = MlflowClient(f"sqlite:///{moved}/outputs/mlflow.db")
    assert all(client.list_artifacts(c.info.run_id) for c in children)  # the first two runs' files found where they are now
    dump = "\n".join(sqlite3.connect(moved / "outputs" / "mlflow.db").iterdump())
    assert old not in dump and str(moved / "outputs" / "mlartifacts") in dump
    # A store that does not hold the study's parent run is not the study's: refused, untouched.
    (tmp_path / "lonely" / "outputs").mkdir(parents=True)
    shutil.copy(moved / "outputs" / "optuna.db", tmp_path / "lonely" / "outputs")
    r = run_bpexp("sweep", *args, "sweep.n_trials=4", cwd=tmp_path / "lonely")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "resume it there" in r.stderr, r.stderr
    assert len(load(tmp_path / "lonely").trials) == 3


@pytest.mark.slow
def test_pruning_stops_trials_early(tmp_path):
    r = run_bpexp("sweep", "sweep.n_trials=16", "sweep.seeds=1", "sweep.pruner=median", "sweep.report_every=20",
                  "sweep.batch_size=2", "sweep.sampler=random", "train.epochs=400", "sweep.progress=false",
                  "tracking.log_plots=false", "tracking.log_model=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study, client, parent, children = check_invariants(tmp_path, 16)
    pruned = [t for t in study.trials if verdict_of(t) == "pruned"]  # not those stopped by divergence
    assert pruned, "a median pruner over random lr in [1e-4, 1] prunes something"
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    for t in pruned:
        c = by_number[t.number]
        assert c.data.tags["optuna.trial_state"] == "PRUNED"
        stop = int(c.data.tags["pruned_epoch"])
        assert stop < 399 and max(m.step for m in client.get_metric_history(c.info.run_id, "train_loss")) <= stop


def _result(seed, loss, status="finished"):
    import numpy as np

    r = MemberResult(Member(4, "tanh", 0.1, seed), np.array([1.0, loss], dtype=np.float32), np.array([0, 1]),
                     np.array([1.0, loss]), {}, {}, status, None if status == "finished" else 1)
    return r


def test_one_verdict_per_trial_from_its_seeds():
    """The median seed decides: a diverged seed counts as worse than any loss."""
    from bpexp.results.outcome import trial_outcome

    o = trial_outcome([_result(1, 0.5), _result(2, 0.25), _result(3, 0.125)], "train_loss")
    assert (o.verdict, o.value, o.diverged_seeds, o.spread) == ("converged", 0.25, (), 0.375)
    o = trial_outcome([_result(1, 0.5), _result(2, 0.25), _result(3, float("nan"), "diverged")], "train_loss")
    # the median seed converged: the value is its measured loss, never a stand-in for the third
    assert (o.verdict, o.value, o.diverged_seeds, o.seed_values) == ("partly diverged", 0.5, (3,), {1: 0.5, 2: 0.25})
    assert o.label == "1 of 3 seeds diverged" and list(o.curves.train) == [1.0, 0.5]
    o = trial_outcome([_result(1, 0.5), _result(2, float("inf"), "diverged"), _result(3, 9e9, "diverged")],
                      "train_loss")
    assert (o.verdict, o.value, o.seed_values, o.label) == ("diverged", None, {1: 0.5}, "diverged (2 of 3 seeds)")
    o = trial_outcome([_result(1, 0.5), _result(2, float("inf"), "diverged")], "test_loss")
    assert (o.verdict, o.value) == ("diverged", None)  # with two seeds the median is their mean
    o = trial_outcome([_result(1, 0.5, "pruned"), _result(2, 0.5, "pruned")], "train_loss")
    assert (o.verdict, o.value) == ("pruned", None)


def test_a_fit_that_never_learned_is_not_fit_and_a_seed_far_above_the_median_is_stuck():
    """Not fit: no seed diverged, the value above a tenth of the constant prediction's loss.
    Stuck: a seed that trained to the end above 10x its config's median (bpexp/results/outcome.py)."""
    from bpexp.results.outcome import trial_outcome
    from bpexp.training.data import constant_loss, make_dataset

    sin = make_dataset("sin", -5, 5, 20)
    assert constant_loss(sin, "train_loss") == pytest.approx(0.5444, abs=1e-4)  # the mean of sin^2 on 20 points
    flat = [_result(1, 0.30), _result(2, 0.27), _result(3, 0.26)]
    o = trial_outcome(flat, "train_loss", 0.544)
    assert (o.verdict, o.stuck_seeds) == ("not fit", ()) and o.value == pytest.approx(0.27)  # a value: COMPLETE
    assert trial_outcome(flat, "train_loss", 2.8).verdict == "converged"  # 0.27 < 0.28: a tenth of 2.8
    assert trial_outcome(flat, "train_loss").verdict == "converged"  # no constant loss: never "not fit"
    # a diverged seed keeps the trial "partly diverged": it places the edge of stability
    assert trial_outcome(flat[:2] + [_result(3, float("nan"), "diverged")], "train_loss", 0.544).verdict == \
        "partly diverged"
    seeds = [_result(1, 7.4e-4), _result(2, 0.271), _result(3, 7.2e-4), _result(4, 7.3e-4), _result(5, 7.0e-3)]
    o = trial_outcome(seeds, "train_loss", 0.544)
    assert o.verdict == "converged" and o.value == pytest.approx(7.4e-4)
    assert o.stuck_seeds == (2,) and o.failed_seeds == (2,)  # 7.0e-3 is 9.5x the median: slow, not stuck
    assert o.label == "converged (1 of 5 seeds stuck)"
    assert o.mean == pytest.approx((7.4e-4 + 0.271 + 7.2e-4 + 7.3e-4 + 7.0e-3) / 5)
    assert o.quantile(1.0) == pytest.approx(0.271) and o.quantile(0.5) == pytest.approx(7.4e-4)


def test_stale_trials_of_dead_or_vanished_workers_are_failed(tmp_path, monkeypatch):
    from bpexp.runtime import liveness
    from bpexp.study import workers

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    unclaimed = study.ask()  # its worker died before claiming it
    dead = study.ask()
    dead.set_user_attr("bpexp.worker", f"{socket.gethostname()}:{2**22 + 12345}")  # no such pid
    dead.set_user_attr("bpexp.outcome", "converged")  # killed between its verdict and its tell
    live = study.ask()
    live.set_user_attr("bpexp.worker", liveness.THIS_WORKER)
    elsewhere = study.ask()
    elsewhere.set_user_attr("bpexp.worker", "another-host:1")  # Optuna's heartbeat covers it
    # the same host name, another PID namespace (a hostNetwork pod): its pid means nothing here
    other_ns = study.ask()
    other_ns.set_user_attr("bpexp.worker", f"{socket.gethostname()}:{2**22 + 12345}@{liveness.PLACE}x")
    dead_here = study.ask()  # this host, boot and namespace, no such pid: provably gone
    dead_here.set_user_attr("bpexp.worker", f"{socket.gethostname()}:{2**22 + 12345}@{liveness.PLACE}")
    # died, not yet reaped by its parent (a launcher polling another worker): a zombie answers
    # os.kill(pid, 0), yet it will never finish its trial
    zombie_process = subprocess.Popen([sys.executable, "-c", ""])
    while open(f"/proc/{zombie_process.pid}/stat").read().rpartition(")")[2].split()[0] != "Z":
        time.sleep(0.05)
    zombie = study.ask()
    zombie.set_user_attr("bpexp.worker", f"{socket.gethostname()}:{zombie_process.pid}@{liveness.PLACE}")
    workers.fail_stale_trials(study)
    zombie_process.wait()
    states = {t.number: t.state for t in study.trials}
    assert states[dead.number] == states[dead_here.number] == states[zombie.number] == TrialState.FAIL
    assert study.trials[dead.number].user_attrs["bpexp.outcome"] == "failed"  # as its state says
    assert states[unclaimed.number] == states[live.number] == states[elsewhere.number] == TrialState.RUNNING
    assert states[other_ns.number] == TrialState.RUNNING
    monkeypatch.setattr(workers, "GRACE_S", 0)  # unclaimed for longer than the grace period
    workers.fail_stale_trials(study)
    assert study.trials[unclaimed.number].state == TrialState.FAIL
    assert study.trials[live.number].state == TrialState.RUNNING


def test_two_workers_failing_one_dead_trial_together_both_go_on(tmp_path, monkeypatch):
    """Both workers see the dead worker's trial RUNNING; the other one's update lands first."""
    from bpexp.study import workers

    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=url, study_name="s")
    dead = study.ask()
    dead.set_user_attr("bpexp.worker", f"{socket.gethostname()}:{2**22 + 12345}")  # no such pid
    other = optuna.load_study(study_name="s", storage=url)
    storage = study._storage
    original = storage.set_trial_state_values

    def after_the_other_worker(trial_id, state, values=None):
        other.tell(dead.number, state=TrialState.FAIL)  # lands between our read and our write
        return original(trial_id, state, values)

    monkeypatch.setattr(storage, "set_trial_state_values", after_the_other_worker)
    workers.fail_stale_trials(study)  # raised UpdateFinishedTrialError before
    assert study.trials[dead.number].state == TrialState.FAIL


@pytest.mark.slow
def test_a_key_added_on_the_command_line_and_network_shapes_are_searched(tmp_path):
    """The README's `+sweep.search_space.<name>={...}`; a categorical over shapes (lists)."""
    r = run_bpexp("sweep", "sweep.n_trials=8", "sweep.seeds=1", "~sweep.search_space.hidden",
                  "+sweep.search_space.act={key: model.activation, type: categorical, choices: [tanh, relu]}",
                  "+sweep.search_space.shape={key: model.hidden, type: categorical, choices: [4, [6, 6]]}",
                  *SMALL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study, client, parent, children = check_invariants(tmp_path, 8)
    assert {t.params["model.hidden"] for t in study.trials} == {4, "[6, 6]"}  # both shapes were tried
    assert {t.params["model.activation"] for t in study.trials} <= {"tanh", "relu"}
    deep = next(c for c in children if c.data.params["model.hidden"] == "[6, 6]")
    again = run_bpexp("reproduce", deep.info.run_id, cwd=tmp_path)
    assert again.returncode == 0 and "bit for bit" in again.stdout, again.stderr
    # a list value is one cell of every CSV: trials.csv, and compare's table.csv
    rows = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path)))))
    assert {row["model.hidden"] for row in rows} == {"4", "[6, 6]"}
    cmp = run_bpexp("compare", "--parent", parent.info.run_id, cwd=tmp_path)
    assert cmp.returncode == 0, cmp.stderr
    table = re.search(r"in (outputs/compare-\w+)/", cmp.stdout).group(1)
    rows = list(csv.DictReader(open(tmp_path / table / "table.csv")))
    assert len(rows) == 8 and {row["model.hidden"] for row in rows} == {"4", "[6, 6]"}


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["sweep.sampler=gp", "sweep.register_as=bpexp-best"], ["sweep.sampler=cmaes"],
                                   ["sweep.pruner=hyperband", "sweep.report_every=20"]])
def test_other_samplers_and_pruners(tmp_path, extra):
    r = run_bpexp("sweep", "sweep.n_trials=12", "sweep.seeds=1", "sweep.batch_size=4", *extra, *SMALL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study, client, parent, children = check_invariants(tmp_path, 12)
    assert len({t.params["train.lr"] for t in study.trials}) == len(study.trials)  # the sampler sampled
    if "sweep.sampler=cmaes" in extra:  # CMA-ES keeps its state in the trials' system attributes
        assert any(k.startswith("cma:") for t in study.trials for k in t.system_attrs)
    if "sweep.register_as=bpexp-best" in extra:  # the best network, registered under that name
        (version,) = client.search_model_versions("name = 'bpexp-best'")
        assert version.run_id == parent.info.run_id
    if "sweep.pruner=hyperband" in extra:
        trained = [t for t in study.trials if verdict_of(t) in ("converged", "partly diverged")]
        assert trained and all(len(t.intermediate_values) == 200 // 20 for t in trained)  # every report_every


@pytest.mark.slow
def test_grid_sampler_covers_the_grid_and_ends(tmp_path):
    """Optuna's grid sampler calls study.stop() when its grid is used up, which raises under
    ask/tell; bpexp's sweep ends by n_trials instead. The grid of an lr in units of the range
    test is a grid of multiples, and each trial's train.lr is its multiple of its suggestion."""
    r = run_bpexp("sweep", "sweep.sampler=grid", "sweep.grid_points=2", "sweep.n_trials=4", "sweep.seeds=1",
                  "sweep.search_space.lr.high=0.5", *SMALL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(tmp_path)
    trained = [t for t in study.trials if verdict_of(t) in TRAINED]
    done = {(t.params["train.lr / lr_find"], t.params["model.hidden"]) for t in trained}
    assert done == {(0.1, 1), (0.1, 32), (0.5, 1), (0.5, 32)}
    for t in trained:
        assert t.params["train.lr"] == t.params["train.lr / lr_find"] * t.user_attrs["bpexp.suggested_lr"]


def test_the_same_sampler_seed_gives_the_same_trials_and_the_progress_bar_counts_them(tmp_path):
    """sweep.sampler_seed makes a study reproducible: the same seed, the same trials and
    values (in another folder, with or without the progress bar); another seed, other
    trials. The progress bar (sweep.progress=true, the default) ends at n_trials."""
    args = ["sweep.n_trials=6", "sweep.seeds=1", "train.epochs=100", "sweep.sequential_trials=0",
            "tracking.log_plots=false", "tracking.log_model=false", "sweep.recheck=0"]
    trials = {}
    for folder, extra in (("a", ["sweep.sampler_seed=7"]), ("b", ["sweep.sampler_seed=7", "sweep.progress=false"]),
                          ("c", ["sweep.sampler_seed=8", "sweep.progress=false"])):
        (tmp_path / folder).mkdir()
        r = run_bpexp("sweep", *args, *extra, cwd=tmp_path / folder)
        assert r.returncode == 0, r.stderr
        trials[folder] = [(t.params, t.value, t.state) for t in load(tmp_path / folder).trials]
        if folder == "a":
            assert re.search(r"study lr_hidden: 100%\S* *\S* 6/6", r.stderr), r.stderr[-500:]
        else:
            assert "6/6" not in r.stderr
    assert trials["a"] == trials["b"] and len(trials["a"]) == 6
    assert [p for p, _, _ in trials["a"]] != [p for p, _, _ in trials["c"]]


def test_the_lr_set_per_trial_has_an_importance():
    """train.lr, set per trial as a multiple of the range test's lr (a one-point distribution in
    Optuna), is read over the lrs the trials trained with: it gets an importance, not 0."""
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import create_trial

    from bpexp.recording.importances import param_importances

    trials = []
    for i in range(20):
        multiple, hidden = 0.2 + 0.1 * i, 1 + i % 5
        lr = multiple * 0.3 / hidden  # the suggestion falls with the width
        trials.append(create_trial(params={"train.lr / lr_find": multiple, "model.hidden": hidden, "train.lr": lr},
                                   distributions={"train.lr / lr_find": FloatDistribution(0.1, 3, log=True),
                                                  "model.hidden": IntDistribution(1, 32, log=True),
                                                  "train.lr": FloatDistribution(lr, lr)},
                                   value=(lr - 0.12) ** 2))
    importances = param_importances(trials)
    assert set(importances) == {"train.lr / lr_find", "model.hidden", "train.lr"} and importances["train.lr"] > 0.05


def test_the_map_of_a_study_is_blank_where_trials_are_sparse():
    """The lr x hidden map interpolates only between trials near each other: a triangle with a
    corner far from the rest (one lone trial) is left out, a dense patch is kept."""
    import numpy as np

    from bpexp.recording.plots import near_triangles

    grid = [(x, y) for x in np.linspace(0, 0.3, 4) for y in np.linspace(0, 0.3, 4)]
    x, y = zip(*grid, (1.0, 1.0))  # a dense corner, and one trial far away
    tri = near_triangles(np.array(x), np.array(y))
    lone = len(grid)
    kept = tri.triangles[~tri.mask]
    assert len(kept) and not (kept == lone).any() and (tri.triangles[tri.mask] == lone).any()
