"""One truth: a study whose trials converge, partly diverge and fully diverge reads the same in
the CLI summary, Optuna, the child runs, the parent run, trials.csv and `bpexp compare`."""
from __future__ import annotations

import csv
import math
from collections import defaultdict
import re
import statistics

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bpexp.results.outcome import verdict_of
from tests.conftest import run_bpexp

# At 300 epochs, seeds 102-104: every lr up to 0.25 converges at 4 hidden; at 8 hidden, lr 0.22
# diverges for seed 103 (1 of 3: the median seed converged), lr 0.25 for seeds 102 and 103
# (2 of 3: the median seed diverged); lr 0.6 diverges for every seed.
GRID = ["sweep.sampler=grid", "sweep.n_trials=8", "sweep.seeds=3", "train.seed=102", "train.epochs=300",
        "sweep.progress=false", "~sweep.search_space.lr", "~sweep.search_space.hidden",
        "+sweep.search_space.rate={key: train.lr, type: categorical, choices: [0.1, 0.22, 0.25, 0.6]}",
        "+sweep.search_space.width={key: model.hidden, type: categorical, choices: [4, 8]}"]
EXPECTED = {(0.1, 4): "converged", (0.22, 4): "converged", (0.25, 4): "converged", (0.6, 4): "diverged",
            (0.1, 8): "converged", (0.22, 8): "partly diverged", (0.25, 8): "diverged", (0.6, 8): "diverged"}
SEEDS = (102, 103, 104)


@pytest.mark.slow
def test_a_study_reads_the_same_everywhere(tmp_path):
    r = run_bpexp("sweep", *GRID, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ("8 trained: 4 converged, 1 partly diverged (a minority of seeds diverged), 0 not fit (loss above 0.1 "
            "of a constant prediction's), 3 diverged (the median seed diverged: PRUNED in Optuna); 0 pruned, "
            "0 failed") in r.stdout
    assert "?workflowType=machine_learning" in r.stdout

    study = optuna.load_study(study_name="lr_hidden", storage=f"sqlite:///{tmp_path}/outputs/optuna.db")
    assert study.metric_names == ["train_loss"]
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    parent_id = re.search(r"MLflow parent run (\w+)", r.stdout).group(1)
    parent = client.get_run(parent_id)
    children = {int(c.data.tags["optuna.trial_number"]): c for c in client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")}
    rows = {int(row["number"]): row for row in csv.DictReader(
        open(client.download_artifacts(parent_id, "trials.csv", str(tmp_path / "dl"))))}
    cmp = run_bpexp("compare", "--parent", parent_id, cwd=tmp_path)
    assert cmp.returncode == 0, cmp.stderr
    table = {line.split()[1]: line.split() for line in cmp.stdout.splitlines() if re.match(r"^\d+ +t\d{3} ", line)}

    inits, ends = defaultdict(list), defaultdict(list)
    for t in study.trials:
        verdict = EXPECTED[(t.params["train.lr"], t.params["model.hidden"])]
        child = children[t.number]
        m, tags = child.data.metrics, child.data.tags
        # Optuna: state, value, constraint and the verdict as user attribute
        assert verdict_of(t) == verdict == t.user_attrs["bpexp.outcome"]
        assert t.state == (TrialState.PRUNED if verdict == "diverged" else TrialState.COMPLETE)
        assert t.constraints == {"diverged": 1.0 if verdict == "diverged" else 0.0}
        assert t.user_attrs["mlflow.run_id"] == child.info.run_id
        # the child run: tags, and metrics that are measured losses only
        assert tags["bpexp.outcome"] == verdict and tags["optuna.trial_state"] == t.state.name
        assert child.info.status == "FINISHED"
        assert child.info.run_name == f"t{t.number:03d} rate={t.params['train.lr']:.3g} width={t.params['model.hidden']}"
        assert all(math.isfinite(v) and v <= 1e4 for v in m.values())
        gone = set(t.user_attrs["bpexp.diverged_seeds"])
        assert tags.get("diverged_seeds", "") == ",".join(map(str, sorted(gone)))
        finals = {s: m[f"train_loss_seed_{s}"] for s in SEEDS if s not in gone}
        for s in gone:  # a diverged seed's curve ends before the epoch it diverged at, under its own name
            assert f"train_loss_seed_{s}" not in m
            assert max(h.step for h in client.get_metric_history(child.info.run_id, f"train_loss_seed_{s}_diverged")) < 299
        history = client.get_metric_history(child.info.run_id, "train_loss")
        if verdict == "diverged":  # the median seed diverged: no value, and the curve ends there
            assert t.value is None and "objective" not in m and "train_loss" not in m and not history
        else:
            # the trial's curve is the median over its seeds, a diverged one counting as worse than
            # any loss: its last point is the value, the worse of two converged seeds for 1 of 3
            ranked = sorted(finals.values()) + [math.inf] * len(gone)
            assert t.value == m["objective"] == m["train_loss"] == statistics.median(ranked)
            assert max(h.step for h in history) == 299
        # its description says the verdict, the value and every seed, as measured
        note = tags["mlflow.note.content"]
        assert note.startswith(f"**{verdict if not gone or verdict == 'diverged' else f'{len(gone)} of 3 seeds diverged'}")
        assert (f"train_loss {t.value!r}, the median over 3 seeds" in note) == (t.value is not None)
        assert all(f"- seed {s}: train_loss {v!r}" in note for s, v in finals.items())
        assert all(f"- seed {s}: diverged at epoch" in note for s in gone)
        # trials.csv and compare say the same
        row = rows[t.number]
        assert (row["state"], row["outcome"], row["mlflow_run_id"]) == (t.state.name, verdict, child.info.run_id)
        assert row["value"] == ("" if t.value is None else repr(t.value))
        line = table[f"t{t.number:03d}"]
        assert " ".join(line).endswith(verdict)
        # sharpness: per seed, the median over seeds as the run's curve, its first point as
        # sharpness_init and in Optuna; at the end only for a trial that did not diverge
        init, end = t.user_attrs["bpexp.sharpness"]
        seeds_init = [client.get_metric_history(child.info.run_id, f"sharpness_seed_{s}" + ("_diverged" if s in gone else ""))
                      for s in SEEDS]
        assert init == pytest.approx(statistics.median(min(h, key=lambda x: x.step).value for h in seeds_init), rel=1e-6)
        inits[t.params["model.hidden"]].append(init)
        if verdict == "diverged":
            assert end is None and "sharpness" not in m and "sharpness_init" not in m
        else:
            assert m["sharpness_init"] == pytest.approx(init, rel=1e-6) and m["sharpness"] == pytest.approx(end, rel=1e-6)
            if verdict == "converged":
                ends[t.params["model.hidden"]].append((t.params["train.lr"], end))

    best = min((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    assert study.best_trial.number == best.number
    assert parent.data.tags["best.trial_number"] == str(best.number)
    assert parent.data.metrics["best_value"] == best.value
    counts = {k: parent.data.metrics[f"n_{k}"] for k in ("converged", "partly_diverged", "diverged", "pruned", "failed")}
    assert counts == {"converged": 4, "partly_diverged": 1, "diverged": 3, "pruned": 0, "failed": 0}
    history = client.get_metric_history(parent_id, "best_value")
    assert [h.step for h in history] == sorted(h.step for h in history) and history[-1].value == best.value
    # the parent's params: the fixed config and the search space, never a base value of a searched key
    params = parent.data.params
    assert "train.lr" not in params and "model.hidden" not in params
    assert params["search.train.lr"] == "categorical [0.1, 0.22, 0.25, 0.6]" and params["train.epochs"] == "300"
    # the bracket at 8 hidden: every seed converged up to lr 0.1, a seed diverged from lr 0.22 on
    assert "  8 hidden: stable up to lr 0.1 (1 converged), a seed diverges from lr 0.22 (3 runs)" in cmp.stdout
    assert "  4 hidden: stable up to lr 0.25 (3 converged), a seed diverges from lr 0.6 (1 run)" in cmp.stdout
    # ... beside 2 / sharpness: the initial networks' (one width, the same seeds: the same networks
    # in every trial, measured alike to float32's precision) and at the end of the converged trial
    # at the largest lr; the same on the parent's stability.csv
    stab = {row["width"]: row for row in csv.DictReader(
        open(client.download_artifacts(parent_id, "stability.csv", str(tmp_path / "dl"))))}
    for width in (4, 8):
        assert max(inits[width]) == pytest.approx(min(inits[width]), rel=1e-6)
        predicted_init = 2 / statistics.median(inits[width])
        lr, end = max(ends[width])  # the converged trial at the largest lr, the closest to the edge
        predicted_end = 2 / end
        assert float(stab[str(width)]["predicted_lr_init"]) == pytest.approx(predicted_init, rel=1e-9)
        assert float(stab[str(width)]["predicted_lr_end_at_stable_lr"]) == pytest.approx(predicted_end, rel=1e-9)
        assert f"; 2/sharpness {predicted_init:.3g} at init, {predicted_end:.3g} at the end at lr {lr:.3g}" in cmp.stdout
    assert "plots/stability.png" in {a.path for a in client.list_artifacts(parent_id, "plots")}

    rep = run_bpexp("reproduce", parent_id, cwd=tmp_path)  # a parent id: its best trial
    assert rep.returncode == 0, rep.stderr
    assert f"reproducing its best trial #{best.number}" in rep.stdout and "bit for bit" in rep.stdout
    report = re.search(r"on MLflow run (\w+)", cmp.stdout).group(1)  # a compare report holds no network
    rep = run_bpexp("reproduce", report, cwd=tmp_path)
    assert rep.returncode == 2 and rep.stderr.count("\n") == 1 and "is a report run" in rep.stderr, rep.stderr
    # every seed of a converged, a partly diverged and a diverged trial reproduced, and the
    # verdict and value they make, as the run records them
    for verdict in ("converged", "partly diverged", "diverged"):
        t = next(t for t in study.trials if verdict_of(t) == verdict)
        rep = run_bpexp("reproduce", children[t.number].info.run_id, cwd=tmp_path)
        assert rep.returncode == 0 and "reproduced bit for bit" in rep.stdout, rep.stdout + rep.stderr
        assert all(f"  seed {s}: " in rep.stdout for s in SEEDS)
        value = "no value" if t.value is None else f"train_loss {t.value!r}"
        mine = value if t.value is None else f"{value} (the median over 3 seeds)"
        assert f": {mine}; recorded: {verdict}, {value}" in rep.stdout, rep.stdout
