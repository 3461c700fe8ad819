"""The end of a study: what its parent run records and what the console prints, read back
from Optuna (so every worker and every resume agree), verdicts as bpexp/results/outcome.py tells them.
"""
from __future__ import annotations

import shlex
from dataclasses import replace

import optuna

from bpexp.results import stability
from bpexp.runtime import ui_links
from bpexp.config.schema import SweepAppConfig, storage_default
from bpexp.results.outcome import (CONVERGED, DIVERGED, NOT_FIT, NOT_FIT_FRACTION, PARTLY_DIVERGED, PRUNED, TRAINED,
                                   VALUED, verdict_of)
from bpexp.recording.run_record import config_tree
from bpexp.results.summary import Rechecked, StudySummary, TrialRow, ranked, recheck_candidates, recheck_rounds, recommended_by
from bpexp.study.recheck import final_seeds, recheck_seeds
from bpexp.study.search_space import searched, trial_config
from bpexp import names
from bpexp.runtime import redaction


def study_summary(study: optuna.Study, cfg: SweepAppConfig) -> StudySummary:
    """The study for the parent run (built here, recorded by the recorder). Every trial's
    verdict is read back from Optuna, so workers and resumes agree on it."""
    trials = study.get_trials(deepcopy=False)
    rows, points = [], []
    for t in trials:
        rows.append(TrialRow(t.number, t.state.name, verdict_of(t) or "failed", t.value, dict(t.params),
                             t.user_attrs.get(names.DIVERGED_SEEDS, []), t.user_attrs.get(names.RUN_ID, "")))
        init, end = t.user_attrs.get(names.SHARPNESS, [None, None])
        points.append(stability.Point(stability.width_of(t.params.get("model.hidden", cfg.model.hidden)),
                                      float(t.params.get("train.lr", cfg.train.lr)), rows[-1].outcome, init, end))
    valued = [r for r in rows if r.outcome in VALUED]  # Optuna's COMPLETE trials
    best = min(valued, key=lambda r: (r.value, r.number)) if valued else None  # as study.best_trial
    summary = StudySummary(
        study_name=study.study_name,
        metric=str(cfg.sweep.metric),
        keys=[k for k, _ in searched(cfg.sweep.search_space)],
        trials=rows,
        best_number=best.number if best else None,
        best_value=best.value if best else float("nan"),
        best_params=best.params if best else {},
        best_config=config_tree(trial_config(cfg, best.params)) if best else None,
        # for the importance figure, which the recorder process computes (bpexp/recording/study_record.py)
        optuna_trials=trials if len(valued) >= 2 and cfg.tracking.log_plots else [],
        stability=stability.per_width(points),
        counts={v: sum(1 for r in rows if r.outcome == v) for v in (*TRAINED, PRUNED, "failed")},
        n_trials=cfg.sweep.n_trials,
    )
    return with_recheck(summary, study, cfg)


def with_recheck(summary: StudySummary, study: optuna.Study, cfg: SweepAppConfig) -> StudySummary:
    """The summary with the re-check's part (bpexp/study/recheck.py), read back from the study's
    user attributes: the sweep reads it again once its re-check is done (the rest of the
    summary is recorded meanwhile)."""
    by_number = {r.number: r for r in summary.trials}
    neighbour_of = {t.number: t.user_attrs[names.NEIGHBOUR_OF] for t in study.get_trials(deepcopy=False)
                    if names.NEIGHBOUR_OF in t.user_attrs}
    rechecked = {int(n): Rechecked(v["verdict"], v["value"], v.get("worst"), v["seeds"], v["diverged_seeds"],
                                   v["seed_values"], by_number[int(n)].params, by_number[int(n)].value,
                                   by_number[int(n)].run_id, v.get("mean"), v.get("q90"), v.get("stuck_seeds", []),
                                   neighbour_of.get(int(n)), v.get("final", False))
                 for n, v in study.user_attrs.get(names.RECHECK, {}).items() if int(n) in by_number}
    recommended = study.user_attrs.get(names.RECOMMENDED)
    recommended = recommended if recommended in rechecked else None
    final = any(r.final for r in rechecked.values())
    return replace(summary, recheck=rechecked, recheck_seeds=recheck_seeds(cfg) if rechecked else [],
                   final_seeds=final_seeds(cfg) if final else [], final_first=cfg.sweep.recheck_final,
                   recommended_number=recommended,
                   recommended_config=config_tree(trial_config(cfg, rechecked[recommended].params))
                   if recommended is not None else None)


def print_summary(cfg: SweepAppConfig, study: optuna.Study, summary: StudySummary, parent: str, uri: str,
                  experiment_id: str) -> None:
    c = summary.counts
    storage = cfg.sweep.storage or storage_default()
    print(f"\nstudy '{study.study_name}': {sum(c[v] for v in TRAINED)} trained: "
          f"{c[CONVERGED]} converged, {c[PARTLY_DIVERGED]} partly diverged (a minority of seeds diverged), "
          f"{c[NOT_FIT]} not fit (loss above {NOT_FIT_FRACTION:g} of a constant prediction's), "
          f"{c[DIVERGED]} diverged (the median seed diverged: PRUNED in Optuna); {c[PRUNED]} pruned, "
          f"{c['failed']} failed")
    if summary.best_number is None:
        print("no trial has a value (every one diverged or was pruned): try a smaller train.lr range or more epochs")
    else:
        print(f"best trial #{summary.best_number}: {cfg.sweep.metric} = {summary.best_value:.6g} "
              f"(median over {cfg.sweep.seeds} seed{'s' if cfg.sweep.seeds > 1 else ''})")
        print_params(summary.best_params)
    n = summary.recommended_number
    if summary.recheck:
        print(f"re-checked {len(summary.recheck)} trials, {recheck_candidates(summary.recheck)}, "
              f"{recheck_rounds(summary)}:")
        for m, r in ranked(summary.recheck):
            print(f"  {'recommended' if m == n else 'not chosen '} {r.label(m)}: {r.describe()}")
            print(f"  {'':11}  " + ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in r.params.items()))
        if n is None:
            print("every one's median seed diverged there: no recommendation (recheck.csv on the parent run)")
        else:
            near = summary.recheck[n].neighbour_of
            print(f"recommended trial #{n} ({'' if near is None else f'next to #{near}; '}the rule: {recommended_by(summary)}):")
            print_params(summary.recheck[n].params)
    if any(s.measured or s.predicted_init for s in summary.stability.values()):
        print(f"where each width's learning rate stops training, measured and predicted by sharpness: "
              f"stability.csv{' and plots/stability.png' if cfg.tracking.log_plots else ''} on the parent run, "
              f"or bpexp compare --parent {parent}")
    print(f"MLflow parent run {parent} in experiment '{cfg.tracking.experiment}'")
    print(f"open the MLflow UI:       {ui_links.ui_command(uri)}")
    print(f"  the study's runs:       {ui_links.experiment_url(uri, experiment_id)}")
    print(f"open optuna-dashboard:    optuna-dashboard {shlex.quote(redaction.redact(storage))}")


def print_params(params: dict) -> None:
    """A trial's params, aligned; an lr searched in units of the range test (lr_units) says so."""
    w = max([16, *map(len, params)])
    for k, v in params.items():
        print(f"  {k:<{w}} {v:.6g}" if isinstance(v, float) else f"  {k:<{w}} {v}")
    multiple = next((k for k in params if k.endswith(" / lr_find")), None)
    if multiple and multiple.split(" / ")[0] in params:
        lr = params[multiple.split(" / ")[0]]
        print(f"  ({multiple}: the multiple of the lr range test's suggestion for this config, "
              f"{lr / params[multiple]:.6g}; the trial trained with {multiple.split(' / ')[0]} = {lr:.6g})")
