"""The re-check at the end of a study (bpexp/study/recheck.py): its bookkeeping in Optuna, MLflow
and the console, and that it recommends by fresh seeds."""
from __future__ import annotations

import csv
import re
import statistics

import pytest

from tests.conftest import load, mlflow_runs, run_bpexp

ARGS = ["sweep", "sweep.n_trials=8", "sweep.seeds=2", "train.epochs=300", "sweep.recheck=3", "sweep.progress=false",
        "tracking.log_plots=false", "tracking.log_model=false"]


def test_the_best_trials_are_rechecked_on_fresh_seeds_and_recorded(tmp_path):
    r = run_bpexp(*ARGS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(tmp_path)
    done = sorted((t for t in study.trials if t.value is not None), key=lambda t: (t.value, t.number))
    rechecked = study.user_attrs["bpexp.recheck"]
    # the 3 best trials, on their own seeds (99, 100) and the next two (101, 102)
    assert sorted(map(int, rechecked)) == sorted(t.number for t in done[:3])
    client, parents, children = mlflow_runs(tmp_path)
    (parent,) = parents
    runs = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    for n, rc in rechecked.items():
        run = runs[int(n)]
        assert rc["seeds"] == [99, 100, 101, 102]
        # the study's own seeds give back what the trial recorded, bit for bit
        for s in (99, 100):
            if str(s) in rc["seed_values"]:
                assert rc["seed_values"][str(s)] == run.data.metrics[f"train_loss_seed_{s}"]
        values = [rc["seed_values"].get(str(s), float("inf")) for s in rc["seeds"]]
        if rc["value"] is not None:
            assert rc["value"] == pytest.approx(statistics.median(values), rel=1e-12)
            assert run.data.metrics["recheck_train_loss"] == rc["value"]
        if rc["diverged_seeds"]:
            assert rc["worst"] is None and "recheck_train_loss_worst_seed" not in run.data.metrics
        else:
            assert rc["worst"] == max(values)
            assert run.data.metrics["recheck_train_loss_worst_seed"] == rc["worst"]
        assert run.data.tags["bpexp.recheck"] == rc["verdict"]
        assert run.data.metrics["recheck_seeds_diverged"] == len(rc["diverged_seeds"])
        for s in (101, 102):  # the fresh seeds' own finals, under names compare does not read as the trial's seeds
            assert (f"recheck_train_loss_seed_{s}" in run.data.metrics) == (s not in rc["diverged_seeds"])
            assert f"train_loss_seed_{s}" not in run.data.metrics
    # the recommendation: the best worst seed among those whose every seed converged (then the
    # fewest diverged seeds and the best median)
    valued = {int(n): rc["value"] for n, rc in rechecked.items() if rc["value"] is not None}
    rank = {int(n): (len(rc["diverged_seeds"]), rc["worst"] if rc["worst"] is not None else rc["value"], int(n))
            for n, rc in rechecked.items() if rc["value"] is not None}
    best = min(rank, key=rank.get)
    assert study.user_attrs["bpexp.recommended"] == best
    assert parent.data.tags["recommended.trial_number"] == str(best)
    assert parent.data.metrics["recommended_value"] == valued[best]
    worst = rechecked[str(best)]["worst"]
    assert parent.data.metrics.get("recommended_worst_seed") == worst
    assert parent.data.tags["best.trial_number"] == str(study.best_trial.number)  # Optuna's best stays Optuna's
    rows = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "recheck.csv", str(tmp_path / "dl")))))
    assert {int(row["number"]): row["recommended"] for row in rows} == {int(n): str(int(int(n) == best)) for n in rechecked}
    assert rows[0]["number"] == str(best) and rows[0]["recheck_worst_seed"] == ("" if worst is None else repr(worst))
    assert "recommended_config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # the answer on the parent's overview (its description), at full precision
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith(f"### Recommended: trial #{best}: ") and f"train_loss **{valued[best]!r}**" in note
    assert f"Best trial on the study's own seeds: #{study.best_trial.number}, train_loss {study.best_value!r}" in note
    assert all(re.search(rf"^\| (\*\*)?#{n}(\*\*)? \|", note, re.M) for n in rechecked)
    # the same answer as the study's note in optuna-dashboard (read as the dashboard reads it)
    from optuna_dashboard._note import get_note_from_system_attrs

    dashboard = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), None)["body"]
    assert dashboard.startswith(note) and parent.info.run_id in dashboard
    assert re.search(rf"re-checked the 3 best trials on fresh seeds 101-102: recommended trial #{best}: "
                     rf"train_loss = {valued[best]:.6g} \(median over its 4 seeds"
                     + (f", worst seed {worst:.6g}" if worst is not None else ""), r.stdout)
    cmp = run_bpexp("compare", "--parent", parent.info.run_id, cwd=tmp_path)
    assert (f"recommended after re-checking the best trials on fresh seeds: trial #{best} "
            f"(model.hidden={runs[best].data.params['model.hidden']}, ") in cmp.stdout
    assert f"median over its own and the fresh seeds {valued[best]:.4g}" + (
        f", worst seed {worst:.4g}" if worst is not None else "") in cmp.stdout


def test_no_recheck_records_none(tmp_path):
    r = run_bpexp(*ARGS[:4], "sweep.n_trials=3", "sweep.recheck=0", *ARGS[5:], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(tmp_path)
    assert "bpexp.recheck" not in study.user_attrs and "re-checked" not in r.stdout
    _, (parent,), children = mlflow_runs(tmp_path)
    assert "recommended.trial_number" not in parent.data.tags
    assert not any("recheck_seeds_diverged" in c.data.metrics for c in children)


def test_a_config_that_diverges_on_fresh_seeds_is_never_recommended():
    from bpexp.results.outcome import Curves, Outcome
    from bpexp.study.recheck import best_of

    import numpy as np

    empty = Curves(*(np.zeros(0),) * 6)
    outcomes = {1: Outcome("diverged", (1, 2, 3, 4), (3, 4, 2), None, {1: 1e-5}, empty),
                2: Outcome("partly diverged", (1, 2, 3, 4), (4,), 3e-3, {1: 1e-3}, empty),
                3: Outcome("converged", (1, 2, 3, 4), (), 2e-3, {1: 2e-3}, empty)}
    assert best_of(outcomes) == 3
    assert best_of({1: outcomes[1]}) is None
    assert best_of({1: outcomes[1], 2: outcomes[2]}) == 2


def test_the_recommendation_is_the_best_worst_seed_not_the_best_median():
    """A config good for most seeds and poor for one (near the edge of stability) loses to one
    good for every seed, though its median is lower."""
    from bpexp.results.outcome import Curves, Outcome
    from bpexp.study.recheck import best_of, worst_seed

    import numpy as np

    empty = Curves(*(np.zeros(0),) * 6)
    seeds = (1, 2, 3, 4)
    edgy = {1: 6.9e-4, 2: 7.0e-4, 3: 7.1e-4, 4: 2.4e-3}  # median 7.05e-4, worst 2.4e-3
    steady = {1: 7.4e-4, 2: 7.4e-4, 3: 7.5e-4, 4: 7.5e-4}  # median 7.45e-4, worst 7.5e-4
    outcomes = {1: Outcome("converged", seeds, (), 7.05e-4, edgy, empty),
                2: Outcome("converged", seeds, (), 7.45e-4, steady, empty)}
    assert worst_seed(outcomes[1]) == 2.4e-3 and worst_seed(outcomes[2]) == 7.5e-4
    assert best_of(outcomes) == 2
