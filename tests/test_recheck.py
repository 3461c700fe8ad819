"""The re-check at the end of a study (bpexp/study/recheck.py): its bookkeeping in Optuna, MLflow
and the console, and that it recommends by fresh seeds."""
from __future__ import annotations

import csv
import re
import statistics

import pytest

from tests.conftest import load, mlflow_runs, run_bpexp

ARGS = ["sweep", "sweep.n_trials=8", "sweep.seeds=2", "train.epochs=300", "sweep.recheck=3", "sweep.recheck_seeds=4",
        "sweep.neighbours=0", "sweep.recheck_final=0", "sweep.progress=false", "tracking.log_plots=false", "tracking.log_model=false"]


def test_the_best_trials_are_rechecked_on_fresh_seeds_and_recorded(tmp_path):
    r = run_bpexp(*ARGS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(tmp_path)
    done = sorted((t for t in study.trials if t.value is not None), key=lambda t: (t.value, t.number))
    rechecked = study.user_attrs["bpexp.recheck"]
    # the best trial of each of the 3 best widths, on their own seeds (99, 100) and the next four (101-104)
    # (then the next best trials, with fewer widths than 3)
    widths = [t.params["model.hidden"] for t in done]
    first = [t for i, t in enumerate(done) if t.params["model.hidden"] not in widths[:i]]
    assert sorted(map(int, rechecked)) == sorted(t.number for t in (first + [t for t in done if t not in first])[:3])
    client, parents, children = mlflow_runs(tmp_path)
    (parent,) = parents
    runs = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    for n, rc in rechecked.items():
        run = runs[int(n)]
        assert rc["seeds"] == [99, 100, 101, 102, 103, 104]
        # the study's own seeds give back what the trial recorded, bit for bit
        for s in (99, 100):
            if str(s) in rc["seed_values"]:
                assert rc["seed_values"][str(s)] == run.data.metrics[f"train_loss_seed_{s}"]
        values = [rc["seed_values"].get(str(s), float("inf")) for s in rc["seeds"]]
        finite = [v for v in values if v != float("inf")]
        if rc["value"] is not None:
            assert rc["value"] == pytest.approx(statistics.median(values), rel=1e-12)
            assert run.data.metrics["recheck_train_loss"] == rc["value"]
            # stuck: trained to the end above 10x the median (bpexp/results/outcome.py)
            assert rc["stuck_seeds"] == [s for s in rc["seeds"] if rc["seed_values"].get(str(s), 0) > 10 * rc["value"]]
        if rc["diverged_seeds"]:
            assert rc["worst"] is None and rc["mean"] is None and "recheck_train_loss_worst_seed" not in run.data.metrics
        else:
            assert rc["worst"] == max(values) and rc["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
            assert run.data.metrics["recheck_train_loss_worst_seed"] == rc["worst"]
            assert run.data.metrics["recheck_train_loss_mean"] == rc["mean"]
        assert run.data.tags["bpexp.recheck"] == rc["verdict"]
        assert run.data.metrics["recheck_seeds_diverged"] == len(rc["diverged_seeds"])
        assert run.data.metrics["recheck_seeds_failed"] == len(rc["diverged_seeds"]) + len(rc["stuck_seeds"])
        # each seed's final metric as one history over the seeds (the step is the seed)
        by_seed = client.get_metric_history(run.info.run_id, "recheck_train_loss_by_seed")
        assert sorted((m.step, m.value) for m in by_seed) == sorted(
            (int(s), v) for s, v in rc["seed_values"].items()) and len(by_seed) == len(finite)
        assert not any(f"train_loss_seed_{s}" in run.data.metrics for s in (101, 102, 103, 104))
    # the recommendation: the fewest failed seeds (diverged or stuck), then the lowest mean
    valued = {int(n): rc["value"] for n, rc in rechecked.items() if rc["value"] is not None}
    rank = {int(n): (len(rc["diverged_seeds"]) + len(rc["stuck_seeds"]),
                     rc["mean"] if rc["mean"] is not None else float("inf"), int(n))
            for n, rc in rechecked.items() if rc["value"] is not None}
    best = min(rank, key=rank.get)
    assert study.user_attrs["bpexp.recommended"] == best
    assert parent.data.tags["recommended.trial_number"] == str(best)
    assert parent.data.metrics["recommended_value"] == valued[best]
    worst, mean = rechecked[str(best)]["worst"], rechecked[str(best)]["mean"]
    assert parent.data.metrics.get("recommended_worst_seed") == worst
    assert parent.data.metrics.get("recommended_mean") == mean
    assert parent.data.metrics["recommended_seeds_failed"] == rank[best][0]
    assert parent.data.tags["best.trial_number"] == str(study.best_trial.number)  # Optuna's best stays Optuna's
    rows = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "recheck.csv", str(tmp_path / "dl")))))
    assert {int(row["number"]): row["recommended"] for row in rows} == {int(n): str(int(int(n) == best)) for n in rechecked}
    assert rows[0]["number"] == str(best) and rows[0]["recheck_worst_seed"] == ("" if worst is None else repr(worst))
    assert [int(row["number"]) for row in rows] == sorted(rank, key=rank.get) + [
        int(n) for n, rc in rechecked.items() if rc["value"] is None]
    per_seed = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "recheck_seeds.csv",
                                                                  str(tmp_path / "dl2")))))
    assert len(per_seed) == 6 * len(rechecked)
    assert sum(row["seed_outcome"] == "stuck" for row in per_seed) == sum(len(rc["stuck_seeds"]) for rc in rechecked.values())
    assert "recommended_config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # the answer on the parent's overview (its description), at full precision
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith(f"### Recommended: trial #{best}: ") and f"median **{valued[best]!r}**" in note
    assert f"Best trial on the study's own seeds: #{study.best_trial.number}, train_loss {study.best_value!r}" in note
    assert all(re.search(rf"^\| (\*\*)?#{n}(\*\*)? \|", note, re.M) for n in rechecked)
    # the same answer as the study's note in optuna-dashboard (read as the dashboard reads it)
    from optuna_dashboard._note import get_note_from_system_attrs

    dashboard = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), None)["body"]
    assert dashboard.startswith(note) and parent.info.run_id in dashboard
    assert ("re-checked 3 trials, the best of each config apart from the lr, on 6 seeds each (the study's and "
            "4 fresh ones, seeds 101-104):") in r.stdout
    assert re.search(rf"  recommended #{best}: median {valued[best]:.3g}, ", r.stdout)
    assert f"recommended trial #{best} (the rule: the fewest failed seeds" in r.stdout
    cmp = run_bpexp("compare", "--parent", parent.info.run_id, cwd=tmp_path)
    assert (f"recommended after re-checking the best trials on fresh seeds: trial #{best} "
            f"(model.hidden={runs[best].data.params['model.hidden']}, ") in cmp.stdout
    assert f"median over its own and the fresh seeds {valued[best]:.4g}" in cmp.stdout


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


def test_a_config_that_fails_on_one_seed_loses_to_one_that_never_fails():
    """Measured (issue 25): lr 0.30 / 3 units is the best median, but one seed in ten never fits
    (stuck at ~0.27); lr 0.27 / 4 units never fails and is within a few percent. The seed that
    is stuck makes it a failure, and the recommendation goes to the config that never fails."""
    from bpexp.results.outcome import Curves, Outcome
    from bpexp.study.recheck import best_of

    import numpy as np

    empty = Curves(*(np.zeros(0),) * 6)
    seeds = tuple(range(20))
    fragile = {s: 7.0e-4 + 1e-6 * s for s in seeds} | {7: 0.271}
    steady = {s: 7.3e-4 + 1e-6 * s for s in seeds}
    outcomes = {1: Outcome("converged", seeds, (), float(np.median(list(fragile.values()))), fragile, empty),
                2: Outcome("converged", seeds, (), float(np.median(list(steady.values()))), steady, empty)}
    assert outcomes[1].value < outcomes[2].value  # the better median...
    assert outcomes[1].stuck_seeds == (7,) and outcomes[2].stuck_seeds == ()  # ...but a seed stuck
    assert outcomes[1].failed_seeds == (7,) and outcomes[1].mean > 10 * outcomes[2].mean
    assert best_of(outcomes) == 2
    # with no failure anywhere, the lower mean wins (a seed 2x the median is no failure)
    fine = {s: 6.9e-4 for s in seeds} | {7: 1.4e-3}
    outcomes[1] = Outcome("converged", seeds, (), 6.9e-4, fine, empty)
    assert outcomes[1].stuck_seeds == () and best_of(outcomes) == 1


def test_the_end_trains_the_trials_next_to_the_best_and_rechecks_them(tmp_path):
    """sweep.neighbours (bpexp/study/neighbours.py): at the end, each width one step either side
    of the best re-check candidates, at the same multiple of its own range test's lr and at that
    multiple / 1.5, is trained as a trial (a child run, tagged with the trial it is next to) and
    re-checked beside them."""
    from optuna.trial import TrialState

    args = [a for a in ARGS if not a.startswith("sweep.neighbours")]
    r = run_bpexp(*args, "sweep.neighbours=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(tmp_path)
    own = [t for t in study.trials if "bpexp.neighbour_of" not in t.user_attrs]
    extra = [t for t in study.trials if "bpexp.neighbour_of" in t.user_attrs]
    assert len(own) == 8 and all(t.number < 8 for t in own) and all(t.number >= 8 for t in extra)
    # the sources: the best trial of each of the 2 best widths (the re-check's first 2 candidates)
    valued = sorted((t for t in own if t.value is not None), key=lambda t: (t.value, t.number))
    sources = [t for i, t in enumerate(valued) if t.params["model.hidden"] not in
               [u.params["model.hidden"] for u in valued[:i]]][:2]
    mult = "train.lr / lr_find"
    # each width one step either side at the source's multiple and / 1.5; the source's width at its multiple / and x 1.5
    wanted = {(s.params["model.hidden"] + d, m) for s in sources for d in (-1, 1) for m in (s.params[mult], s.params[mult] / 1.5)}
    wanted |= {(s.params["model.hidden"], m) for s in sources for m in (s.params[mult] / 1.5, s.params[mult] * 1.5)}
    wanted -= {(s.params["model.hidden"], s.params[mult]) for s in sources}
    wanted = {(w, m) for w, m in wanted if 1 <= w <= 32 and 0.1 <= m <= 3.0}
    assert {(t.params["model.hidden"], t.params[mult]) for t in extra} == wanted and len(extra) == len(wanted)
    for t in extra:
        source = study.trials[t.user_attrs["bpexp.neighbour_of"]]
        assert source in sources and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        # its lr: the multiple times its own width's range test
        assert t.params["train.lr"] == pytest.approx(t.params[mult] * t.user_attrs["bpexp.suggested_lr"], rel=1e-12)
        if t.params["model.hidden"] != source.params["model.hidden"]:  # a width's neighbour: the multiple kept, or / 1.5
            assert abs(t.params["model.hidden"] - source.params["model.hidden"]) == 1
            assert t.params[mult] in (source.params[mult], source.params[mult] / 1.5)
            assert t.user_attrs["bpexp.suggested_lr"] != source.user_attrs["bpexp.suggested_lr"]
        else:  # the lr's: the same width's range test, the lr / or x 1.5
            assert t.user_attrs["bpexp.suggested_lr"] == source.user_attrs["bpexp.suggested_lr"]
            assert t.params["train.lr"] / source.params["train.lr"] == pytest.approx(1.5 ** (1 if t.params[mult] >
                                                                                             source.params[mult] else -1))
    assert any(t.params["model.hidden"] == study.trials[t.user_attrs["bpexp.neighbour_of"]].params["model.hidden"]
               for t in extra)  # neighbours along the lr were trained
    rechecked = {int(n) for n in study.user_attrs["bpexp.recheck"]}
    assert {t.number for t in extra if t.value is not None} <= rechecked
    for s in sources:  # re-checked, unless a neighbour along the lr took its place as its width's best
        better = [t.number for t in extra if t.params["model.hidden"] == s.params["model.hidden"]
                  and t.value is not None and t.value < s.value]
        assert s.number in rechecked or set(better) & rechecked, (s.number, better, rechecked)
    client, (parent,), children = mlflow_runs(tmp_path)
    tags = {int(c.data.tags["optuna.trial_number"]): c.data.tags.get("bpexp.neighbour_of") for c in children}
    assert {n: v for n, v in tags.items() if v is not None} == {t.number: str(t.user_attrs["bpexp.neighbour_of"])
                                                                 for t in extra}
    rows = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "recheck.csv", str(tmp_path / "dl")))))
    assert {int(row["number"]): row["neighbour_of"] for row in rows} == {
        n: str(study.trials[n].user_attrs.get("bpexp.neighbour_of", "")) for n in rechecked}
    assert f"training {len(extra)} trials next to the best ones" in r.stdout
    assert "re-checked" in r.stdout and "the best of each config apart from the lr and the trials next to the best ones" in r.stdout
    for t in extra:
        if t.number in rechecked:
            assert f" #{t.number} (next to #{t.user_attrs['bpexp.neighbour_of']}): " in r.stdout
    # a rerun finds them trained: nothing to do, no trial more
    again = run_bpexp(*args, "sweep.neighbours=2", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout and len(load(tmp_path).trials) == len(study.trials)


def test_the_neighbours_of_a_config_stay_in_the_search_space_and_are_trained_once():
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    from bpexp.study.neighbours import missing, neighbour_params
    from tests.conftest import compose_sweep

    cfg = compose_sweep("sweep.neighbours=2", "sweep.neighbour_factor=1")  # the int key's neighbours only
    dist = {"train.lr / lr_find": FloatDistribution(0.1, 3.0, log=True),
            "model.hidden": IntDistribution(1, 32, log=True), "train.lr": FloatDistribution(1e-6, 30.0, log=True)}

    def trial(n, w, m, value, state=optuna.trial.TrialState.COMPLETE, **attrs):
        return optuna.trial.create_trial(params={"train.lr / lr_find": m, "model.hidden": w, "train.lr": m * 0.1},
                                         distributions=dist, value=value if state.name == "COMPLETE" else None,
                                         state=state, user_attrs=attrs)

    study = optuna.create_study()
    # the best two widths: 32 (the edge of the space) and 31 (its neighbour up is 32, a source itself)
    study.add_trials([trial(0, 32, 1.0, 1e-3), trial(1, 31, 1.0, 2e-3), trial(2, 4, 0.5, 3e-3), trial(3, 32, 0.7, 4e-3)])
    got = neighbour_params(cfg, study.trials)
    assert [(n, p["model.hidden"], p["train.lr / lr_find"]) for n, p in got] == [(1, 30, 1.0)]
    assert all("train.lr" not in p for _, p in got)  # derived from the multiple, by the trial's own range test
    # the width 31 at multiple 1.0 of trial 0 is trial 1's own config: no neighbour again
    # one already waiting (queued by a command cut short) or trained is not queued again
    study.enqueue_trial({"train.lr / lr_find": 1.0, "model.hidden": 30})
    assert missing(cfg, study.trials, neighbour_params(cfg, study.trials)) == []
    assert neighbour_params(compose_sweep("sweep.neighbours=0"), study.trials) == []
    assert neighbour_params(compose_sweep("sweep.recheck=0"), study.trials) == []
    # along the lr's multiple (log scale) too: / and x 2 here, kept within [0.1, 3]; and the next
    # widths at the multiple / 2 as well (trial 1's width 31 at 0.5 is trial 0's neighbour already)
    got = neighbour_params(compose_sweep("sweep.neighbours=2", "sweep.neighbour_factor=2"), study.trials)
    assert [(n, p["model.hidden"], p["train.lr / lr_find"]) for n, p in got] == [
        (0, 32, 0.5), (0, 32, 2.0), (0, 31, 0.5), (1, 31, 2.0), (1, 30, 1.0), (1, 30, 0.5)]  # the space's order: lr, hidden
    study.add_trial(trial(4, 32, 2.0, 5e-3))  # the multiple 2.0 at width 32: tried already
    assert [p for _, p in missing(cfg, study.trials, got)] == [{"train.lr / lr_find": 0.5, "model.hidden": 32},
                                                              {"train.lr / lr_find": 0.5, "model.hidden": 31},
                                                              {"train.lr / lr_find": 2.0, "model.hidden": 31},
                                                              {"train.lr / lr_find": 0.5, "model.hidden": 30}]
    # the lower multiple stays within the space: at its floor, the next width at the same multiple only
    study.add_trial(trial(5, 8, 0.1, 5e-4))
    low = neighbour_params(compose_sweep("sweep.neighbours=1", "sweep.neighbour_factor=2"), study.trials)
    n = study.trials[-1].number
    assert [(m, p["model.hidden"], p["train.lr / lr_find"]) for m, p in low] == [(n, 8, 0.2), (n, 7, 0.1), (n, 9, 0.1)]


@pytest.mark.parametrize("where", ["neighbours-queued", "training:2"])  # training:2: the neighbours' first batch
def test_a_sweep_killed_at_its_neighbours_trains_each_once_on_resume(tmp_path, where):
    """kill -9 once the neighbours are queued (WAITING), or while they train (RUNNING: the resume
    fails them): the rerun trains each neighbour once, and ends the study."""
    from optuna.trial import TrialState

    from tests.conftest import check_invariants

    args = [a for a in ARGS if not a.startswith("sweep.neighbours")] + ["sweep.neighbours=2"]
    r = run_bpexp(*args, cwd=tmp_path, env={"BPEXP_FAILPOINT": where})
    assert r.returncode == -9, (r.returncode, r.stderr)
    cut = load(tmp_path)
    queued = [t for t in cut.trials if "bpexp.neighbour_of" in t.user_attrs]
    states = {t.state for t in queued}
    if where == "neighbours-queued":
        assert queued and states == {TrialState.WAITING}
    else:  # the first batch of them training, the rest (a batch of 4: the study's sequential start) still queued
        assert TrialState.RUNNING in states and states <= {TrialState.RUNNING, TrialState.WAITING}
    r = run_bpexp(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study, *_ = check_invariants(tmp_path, 8)
    extra = [t for t in study.trials if "bpexp.neighbour_of" in t.user_attrs
             and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]  # PRUNED: diverged
    keys = [(t.params["model.hidden"], t.params["train.lr / lr_find"]) for t in extra]
    assert len(keys) == len(set(keys)) == len(queued)
    assert {int(n) for n in study.user_attrs["bpexp.recheck"]} >= {t.number for t in extra if t.value is not None}


def test_the_final_round_trains_the_best_of_the_first_on_more_seeds_and_recommends_among_them(tmp_path):
    """sweep.recheck_final (bpexp/study/recheck.py: rechecked): the first round's best 2 by the
    rule train on 3 more fresh seeds (105-107), and the recommendation is the best of those 2
    over all 9 of their seeds."""
    import math

    args = [a for a in ARGS if not a.startswith("sweep.recheck_final")]
    r = run_bpexp(*args, "sweep.recheck_final=2", "sweep.recheck_final_seeds=3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(tmp_path)
    rechecked = {int(n): rc for n, rc in study.user_attrs["bpexp.recheck"].items()}
    assert len(rechecked) == 3

    def first_round(n):  # the rule over the study's seeds and the first 4 fresh ones only
        rc = rechecked[n]
        values = [rc["seed_values"].get(str(s), math.inf) for s in range(99, 105)]
        median = statistics.median(values)
        if not math.isfinite(median):
            return None
        diverged = sum(s in rc["diverged_seeds"] for s in range(99, 105))
        stuck = sum(math.isfinite(v) and v > 10 * median for v in values)
        return diverged + stuck, (statistics.fmean(values) if not diverged else math.inf), n

    ranks = {n: first_round(n) for n in rechecked if first_round(n) is not None}
    finalists = sorted(ranks, key=ranks.get)[:2]
    assert len(finalists) == 2
    for n, rc in rechecked.items():
        assert rc["final"] == (n in finalists)
        assert rc["seeds"] == list(range(99, 108 if n in finalists else 105))
    rank = {n: (len(rechecked[n]["diverged_seeds"]) + len(rechecked[n]["stuck_seeds"]),
                rechecked[n]["mean"] if rechecked[n]["mean"] is not None else math.inf, n)
            for n in finalists if rechecked[n]["value"] is not None}
    best = min(rank, key=rank.get)
    assert study.user_attrs["bpexp.recommended"] == best
    client, (parent,), _ = mlflow_runs(tmp_path)
    rows = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "recheck.csv", str(tmp_path / "dl")))))
    assert [row["final"] for row in rows] == ["1", "1", "0"] and rows[0]["number"] == str(best)
    assert {int(row["number"]): int(row["n_seeds"]) for row in rows} == {n: len(rc["seeds"]) for n, rc in rechecked.items()}
    per_seed = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "recheck_seeds.csv",
                                                                  str(tmp_path / "dl2")))))
    assert len(per_seed) == 9 * 2 + 6 and sum(row["fresh"] == "1" for row in per_seed) == 7 * 2 + 4
    assert ("on 6 seeds each (the study's and 4 fresh ones, seeds 101-104); the best 2 again on 3 more "
            "(seeds 105-107):") in r.stdout
    assert f"recommended trial #{best} (the rule: the fewest failed seeds" in r.stdout
    assert "of the 2 trained on 9 seeds):" in r.stdout
    note = parent.data.tags["mlflow.note.content"]
    assert "over its 9 seeds (the study's and 7 fresh ones, 101-107)" in note


@pytest.mark.parametrize("final_stuck", [True, False])
def test_the_final_round_goes_on_while_its_winner_failed_a_seed_and_a_rival_outside_it_failed_none(monkeypatch,
                                                                                                  final_stuck):
    """bpexp/study/recheck.py: challengers. The first round's best 2 (trials 1 and 2, clean on
    its 6 seeds) each stick on a seed of the final round's 3: then the next 2 that failed on no
    seed of round 1 (3 and 4) train on those 3 seeds too, and the recommendation is 3 (clean on
    all 9); trial 5, stuck on a round-1 seed, never enters. When the finalists stay clean, the
    final round is the best 2 alone, as before."""
    from types import SimpleNamespace

    import numpy as np

    from bpexp.results.outcome import Curves, Outcome
    from bpexp.study import recheck
    from tests.conftest import compose_sweep

    cfg = compose_sweep("sweep.seeds=2", "sweep.recheck_seeds=4", "sweep.recheck_final=2", "sweep.recheck_final_seeds=3")
    assert recheck.final_seeds(cfg) == [105, 106, 107]
    base = {1: 7.0e-4, 2: 7.5e-4, 3: 1.2e-3, 4: 1.3e-3, 5: 6.0e-4}
    stuck = {(5, 101)} | ({(1, 106), (2, 105)} if final_stuck else set())
    trained: dict[int, list[int]] = {n: [] for n in base}

    def train_seeds(cfg, trials, data, seeds):
        for t in trials:
            trained[t.number] += list(seeds)
        return {t.number: [(s, 0.27 if (t.number, s) in stuck else base[t.number] * (1 + 1e-3 * (s % 7))) for s in seeds]
                for t in trials}

    def outcomes_of(cfg, data, results):
        empty = Curves(*(np.zeros(0),) * 6)
        return {n: Outcome("converged", tuple(s for s, _ in rs), (), float(np.median([v for _, v in rs])), dict(rs), empty)
                for n, rs in results.items()}

    monkeypatch.setattr(recheck, "train_seeds", train_seeds)
    monkeypatch.setattr(recheck, "outcomes_of", outcomes_of)
    outcomes, finalists = recheck.rechecked(cfg, [SimpleNamespace(number=n) for n in base], data=None)
    round_1, final = list(range(99, 105)), [105, 106, 107]
    if final_stuck:
        assert finalists == [1, 2, 3, 4]
        assert outcomes[1].failed_seeds == (106,) and outcomes[2].failed_seeds == (105,)
        assert recheck.best_of(outcomes, finalists) == 3
    else:
        assert finalists == [1, 2] and recheck.best_of(outcomes, finalists) == 1
    for n in base:
        assert trained[n] == round_1 + (final if n in finalists else [])
        assert list(outcomes[n].seeds) == trained[n]
    assert outcomes[5].failed_seeds == (101,) and 5 not in finalists
    # and in the user's words (the console and the parent's description: results/summary.recheck_rounds)
    from bpexp.results.summary import Rechecked, StudySummary, recheck_rounds

    summary = StudySummary("s", "train_loss", [], [], None, float("nan"), {}, None, [], {}, {},
                           recheck={n: Rechecked("converged", o.value, None, list(o.seeds), [], {}, {}, None, "",
                                                 final=n in finalists) for n, o in outcomes.items()},
                           recheck_seeds=[101, 102, 103, 104], final_seeds=final, final_first=2)
    words = "on 6 seeds each (the study's and 4 fresh ones, seeds 101-104); the best 2 again on 3 more (seeds 105-107)"
    assert recheck_rounds(summary) == words + (", and as the best of them failed a seed, the next 2 that had failed none"
                                               if final_stuck else "")
