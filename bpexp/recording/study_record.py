"""A study in MLflow: its parent run, its child runs settled after dead workers, and what the
parent holds at the end (counts, best values, figures, trials.csv, the best network).

These functions take an MlflowClient first and run in the recorder process (bpexp/recording/recorder.py).
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Optional

import numpy as np

from bpexp.results import stability
from bpexp.results.summary import StudySummary, ranked
from bpexp.recording.study_note import study_note
from bpexp.runtime.redaction import redact_tree
from bpexp.runtime.stores import StoreError
from bpexp.recording.tracking import child_runs, end_failed_trial_runs, log_all, log_files, start_run
from bpexp.recording.best_model import describe_best_model, log_best_model, log_recommended_model
from bpexp.recording.importances import param_importances
from bpexp import names


# ------------------------------------------------------------------ a study's parent run


def open_parent_run(client, experiment_id: str, known: Optional[str], study_name: str,
                    tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
    """The study's parent run, set RUNNING: a new one for a new study, else the known one,
    restored with its trials' runs if it was deleted (MLflow deletes softly: the UI's Delete,
    `mlflow runs delete`). Gone for good (`mlflow gc`), the study's records cannot be made
    whole again: a StoreError, never a second parent holding part of the study."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    if known:
        try:
            run = client.get_run(known)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise StoreError("sweep.study_name", study_name, f"its MLflow parent run {known} is gone from this "
                             "tracking store for good: choose another sweep.study_name (or sweep.storage)") from None
        if run.info.lifecycle_stage == "deleted":
            client.restore_run(known)
            for child in client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{known}'",
                                            run_view_type=ViewType.DELETED_ONLY, max_results=50000):
                client.restore_run(child.info.run_id)
            client.set_tag(known, names.RESTORED, "the parent run had been deleted; restored on resume")
        if run.info.status != "RUNNING":
            client.update_run(known, status="RUNNING")
        return known
    run_id = start_run(client, experiment_id, f"study-{study_name}",
                       {**tags, names.ROLE: "study", names.STUDY_NAME: study_name})
    log_all(client, run_id, params=params)
    return run_id


def settle_child_runs(client, parent_run_id: str, trial_states: Mapping[int, str],
                      dead_workers: Optional[set] = None) -> None:
    """Child runs left RUNNING follow their trial, Optuna's record: FINISHED if the trial was
    told COMPLETE or PRUNED (before its worker died), KILLED if it failed (a dead worker's
    trial, failed by its pid on this host or by Optuna's heartbeat on another).

    A run is settled once its trial is no longer RUNNING. Its worker may be alive, between
    telling the trial and ending the run itself: it ends it the same way, so that is harmless.
    A run of a trial still RUNNING is left alone, unless its worker is known dead."""
    for run in child_runs(client, parent_run_id, "attributes.status = 'RUNNING'"):
        number = int(run.data.tags.get(names.TRIAL_NUMBER, -1))
        state = trial_states.get(number, "FAIL")
        if state == "RUNNING" and not (dead_workers and run.data.tags.get(names.WORKER) in dead_workers):
            continue
        state = "FAIL" if state == "RUNNING" else state
        try:
            if state in ("COMPLETE", "PRUNED"):
                client.set_tag(run.info.run_id, names.TRIAL_STATE, state)
                client.set_terminated(run.info.run_id, "FINISHED")
            else:
                end_failed_trial_runs(client, [run.info.run_id], "the worker stopped before the trial ended")
        except Exception:  # another worker settled it at the same moment
            continue


def record_study(client, parent_run_id: str, summary: StudySummary, register_as: Optional[str],
                 figures: bool = True, model: bool = True) -> None:
    """Counts and best values as tags and metrics, the study's figures (tracking.log_plots), a
    CSV of all trials, the best network (tracking.log_model). Every trial is shown as its
    verdict (bpexp/results/outcome.py) says."""
    if figures:  # matplotlib (~0.5 s of CPU): not imported by a study that draws nothing
        from bpexp.recording import plots

    trials, c, metric, keys = summary.trials, summary.counts, summary.metric, summary.keys
    n = len(trials)
    tags = {f"best.{k}": v for k, v in summary.best_params.items()}
    metrics = [(f"n_{k.replace(' ', '_')}", v, n) for k, v in c.items()]
    if summary.best_number is not None:
        tags["best.trial_number"] = summary.best_number
    # params cannot change in MLflow: a top-up's sweep.n_trials goes here (param sweep.n_trials: the first run's)
    tags[names.N_TRIALS] = summary.n_trials
    log_all(client, parent_run_id, metrics=metrics, tags=tags)
    files: dict[str, Any] = {"trials.csv": trials_csv(trials, keys), "stability.csv": stability.to_csv(summary.stability)}
    if figures:
        importances = param_importances(summary.optuna_trials)
        files.update(plots.study_figures(trials, keys, metric, importances))
        if summary.stability:
            files["plots/stability.png"] = plots.stability_plot(summary.stability)
    ok = [t for t in trials if t.outcome == "converged"]
    top = sorted(ok, key=lambda t: t.value)[:5] if figures else []
    best = summary.best_number
    wanted = {t.number for t in top} | ({best} if model and best is not None else set())
    runs = finished_runs(client, {t.number: t.run_id for t in trials if t.number in wanted})
    curves = []
    for t in top:
        if t.number in runs:
            hist = sorted(client.get_metric_history(runs[t.number].info.run_id, metric), key=lambda m: m.step)
            label = f"#{t.number} " + short_params(t.params)
            curves.append((label, np.array([m.step for m in hist]), np.array([m.value for m in hist])))
    if curves:
        files["plots/top_trials_loss.png"] = plots.loss_plot(
            curves, f"{metric} of the top trials (median over seeds)", ylabel=metric)
    if summary.best_config:
        import yaml

        files["best_config.yaml"] = yaml.safe_dump(redact_tree(summary.best_config), sort_keys=False)
    log_files(client, parent_run_id, files)
    previous = client.get_run(parent_run_id).data.tags.get("best.model_trial")
    if model and best is not None and str(best) != previous and best in runs:
        log_best_model(client, parent_run_id, runs[best].info.run_id, summary, register_as)
        client.set_tag(parent_run_id, "best.model_trial", best)


def short_params(params: Mapping[str, Any]) -> str:
    """A trial's params for a figure's label: 'lr=0.158 hidden=7'."""
    return " ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                    for k, v in params.items())


def finished_runs(client, run_ids: Mapping[int, str]) -> dict[int, Any]:
    """trial number -> its FINISHED child run, read by the run id Optuna holds (searching the
    parent's children instead read every child's params, metrics and tags: 2.1 s at 1000 trials)."""
    from mlflow.exceptions import MlflowException

    runs = {}
    for number, run_id in run_ids.items():
        try:
            run = client.get_run(run_id) if run_id else None
        except MlflowException:  # deleted meanwhile: no curve, no model from it
            run = None
        if run is not None and run.info.status == "FINISHED":
            runs[number] = run
    return runs


def record_recommendation(client, parent_run_id: str, summary: StudySummary, figures: bool = True,
                          model: bool = False) -> None:
    """The re-check and the recommendation (`record_recheck`), once the re-check is done, the
    recommended network as the model `recommended_model` (tracking.log_model; when it is not
    the best trial's, which is `best_model` already), and the study's answer as the parent's
    description (recording/study_note.py)."""
    if summary.recheck:
        log_files(client, parent_run_id, record_recheck(client, parent_run_id, summary, figures))
    n = summary.recommended_number
    previous = client.get_run(parent_run_id).data.tags.get("recommended.model_trial")
    if model and n is not None and n != summary.best_number and str(n) != previous and summary.recheck[n].run_id:
        log_recommended_model(client, parent_run_id, summary)
        client.set_tag(parent_run_id, "recommended.model_trial", n)
    if model and n is not None and summary.best_number is not None:
        describe_best_model(client, parent_run_id, summary)
    client.set_tag(parent_run_id, names.NOTE, study_note(summary))


def record_recheck(client, parent_run_id: str, summary: StudySummary, figures: bool = True) -> dict[str, Any]:
    """The re-check (bpexp/study/recheck.py). On each re-checked child run: `recheck_<metric>`
    (the median over its own and the fresh seeds), `recheck_<metric>_mean`, `_q90` and
    `_worst_seed` (where finite), `recheck_<metric>_by_seed` (each seed's final metric, the
    step being the seed: one chart over the seeds), `recheck_seeds_failed`, `_diverged` and
    `_stuck`, tag `bpexp.recheck` (the verdict over all seeds). On the parent: `recommended.*`
    tags, `recommended_value` (median), `recommended_mean`, `recommended_q90`,
    `recommended_worst_seed`, `recommended_seeds_failed`. Returns the parent's files:
    recheck.csv (a config a row, ranked), recheck_seeds.csv (a seed a row) and
    plots/recheck_seeds.png (each config's seeds, failures marked)."""
    import csv
    import io

    import yaml

    metric = summary.metric
    for n, r in summary.recheck.items():
        if not r.run_id:
            continue
        rows = [(f"recheck_{metric}_by_seed", v, int(s)) for s, v in r.seed_values.items()]
        rows += [("recheck_seeds_failed", float(r.failed), 0), ("recheck_seeds_diverged", float(len(r.diverged_seeds)), 0),
                 ("recheck_seeds_stuck", float(len(r.stuck_seeds)), 0)]
        rows += [(f"recheck_{metric}{suffix}", v, 0) for suffix, v in
                 (("", r.value), ("_mean", r.mean), ("_q90", r.q90), ("_worst_seed", r.worst)) if v is not None]
        log_all(client, r.run_id, metrics=rows, tags={names.RECHECK: r.verdict})
    n = summary.recommended_number
    files: dict[str, Any] = {}
    if n is not None:
        r = summary.recheck[n]
        log_all(client, parent_run_id,
                metrics=[(f"recommended_{k}", v, 0) for k, v in (("value", r.value), ("mean", r.mean), ("q90", r.q90),
                                                                  ("worst_seed", r.worst)) if v is not None]
                + [("recommended_seeds_failed", float(r.failed), 0)],
                tags={"recommended.trial_number": n, **{f"recommended.{k}": v for k, v in r.params.items()}})
        files["recommended_config.yaml"] = yaml.safe_dump(redact_tree(summary.recommended_config), sort_keys=False)
    keys, order = summary.keys, ranked(summary.recheck)
    num = lambda v: "" if v is None else repr(v)  # noqa: E731
    seeds = lambda v: " ".join(map(str, v))  # noqa: E731
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    # What a reader needs first comes first (MLflow's preview shows the leftmost columns), in
    # the order the recommendation ranks them (bpexp/study/recheck.py: best_of).
    out.writerow(["number", "recommended", "final", "seeds_failed", "recheck_mean", "recheck_value", "recheck_q90",
                  "recheck_worst_seed", "recheck_outcome", "value", *keys, "n_seeds", "diverged_seeds", "stuck_seeds",
                  "seeds", "neighbour_of", "mlflow_run_id"])
    for m, r in order:
        out.writerow([m, int(m == n), int(r.final), r.failed, num(r.mean), num(r.value), num(r.q90), num(r.worst), r.verdict,
                      num(r.study_value), *(json.dumps(v) if isinstance(v := r.params.get(k, ""), list) else v
                                            for k in keys),
                      len(r.seeds), seeds(r.diverged_seeds), seeds(r.stuck_seeds), seeds(r.seeds),
                      "" if r.neighbour_of is None else r.neighbour_of, r.run_id])
    files["recheck.csv"] = buf.getvalue()
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["number", "seed", "fresh", metric, "seed_outcome"])
    fresh = summary.fresh_seeds
    for m, r in order:
        for s in r.seeds:
            v = r.seed_values.get(str(s))
            what = "diverged" if s in r.diverged_seeds else "stuck" if s in r.stuck_seeds else "trained"
            out.writerow([m, s, int(s in fresh), num(v), what])
    files["recheck_seeds.csv"] = buf.getvalue()
    if figures:
        from bpexp.recording import plots
        from bpexp.results.outcome import STUCK_RATIO

        groups = [(f"{'* ' if m == n else ''}#{m} ({len(r.seeds)}) " + short_params(
            {k: v for k, v in r.params.items() if not k.endswith(" / lr_find")}),
            [*r.seed_values.values(), *[float("inf")] * len(r.diverged_seeds)]) for m, r in order]
        bounds = [STUCK_RATIO * r.value if r.value is not None else float("inf") for _, r in order]
        files["plots/recheck_seeds.png"] = plots.spread_plot(
            groups, f"final {metric} of each seed (log)",
            "re-checked configs over their (n) seeds (* recommended)", stuck_above=bounds)
    return files


def trials_csv(trials, keys) -> str:
    """One row per trial: its verdict and value as everywhere else; no booleans (MLflow's CSV
    preview shows them blank), list values as their JSON text in one cell."""
    import csv
    import io

    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["number", "state", "outcome", "value", "diverged_seeds", *keys, "mlflow_run_id"])
    for t in trials:
        out.writerow([t.number, t.state, t.outcome, "" if t.value is None else repr(t.value),
                      " ".join(map(str, t.diverged_seeds)),
                      *(json.dumps(v) if isinstance(v := t.params.get(k, ""), list) else v for k in keys),
                      t.run_id])
    return buf.getvalue()


def warm_ups(plots: bool, model: bool) -> list[tuple[str, ...]]:
    """What the end of a study imports here, in steps of ~1-2 s each (2-core machine): Optuna's
    importance module (the importance figure; without scikit-learn, bpexp/recording/importances.py),
    torch, torch.export's tracer and mlflow.pytorch (the best model; torch.export imports its
    tracer only when it first exports: ~1.3 s). The sweep sends
    one step after each batch (`warm_up`), while its next batch trains, so that no batch waits
    for them and the study's end does not pay for them (a 1000-trial study's end: 6.1 s -> 3.7 s)."""
    return [*([("bpexp.recording.importances:optuna_importance",)] if plots else []),
            *([("torch",), ("torch.export._trace", "mlflow.pytorch")] if model else [])]


def warm_up(client, modules: tuple[str, ...]) -> None:
    import importlib

    for module in modules:  # "package.module" or "package.module:function", called once imported
        try:
            module, _, call = module.partition(":")
            loaded = importlib.import_module(module)
            if call:
                getattr(loaded, call)()
        except Exception:  # optional: the work that needs it imports (and reports) it itself
            pass
