"""The study's answer, where a user looks first: the parent run's description in MLflow
(tag mlflow.note.content, markdown, shown on the run's overview). Values at full precision:
MLflow's metric bars round ~7e-4 to "0.00"."""
from __future__ import annotations

from bpexp.results.outcome import CONVERGED, DIVERGED, NOT_FIT, NOT_FIT_FRACTION, PARTLY_DIVERGED, TRAINED
from bpexp.results.summary import (RECHECK_RULE, StudySummary, ranked, recheck_candidates, recheck_rounds,
                                   recommended_by, seed_span)


def study_note(summary: StudySummary) -> str:
    s, metric = summary, summary.metric
    c = s.counts
    lines = []
    n = s.recommended_number
    if n is not None:
        r = s.recheck[n]
        seeds = len(r.seeds)
        fresh = [x for x in r.seeds if x in s.fresh_seeds]
        lines += [f"### Recommended: trial {r.label(n)}: {_params(r.params)}", "",
                  f"{metric} over its {seeds} seeds (the study's and {len(fresh)} fresh ones, "
                  f"{seed_span(fresh)}): median **{r.value!r}**, mean {_num(r.mean)}, 90th percentile "
                  f"{_num(r.q90)}, worst {_num(r.worst)}; {r.failures()}.", "",
                  f"The rule: {len(s.recheck)} trials, {recheck_candidates(s.recheck)}, were trained "
                  f"again {recheck_rounds(s)}; recommended: "
                  f"{recommended_by(s)} (recheck.csv, recheck_seeds.csv, plots/recheck_seeds.png, recommended_config.yaml).", ""]
        rejected = [(m, q) for m, q in ranked(s.recheck) if m != n and q.failed]
        for m, q in rejected:
            lines.append(f"Not chosen: {q.label(m)} ({_params(q.params)}): {q.failures()}.")
        lines += [""] if rejected else []
        lines += ["| trial | params | median | mean | 90th percentile | worst seed | failed seeds | value on the study's seeds |",
                  "|---|---|---|---|---|---|---|---|"]
        for m, q in ranked(s.recheck):
            lines.append(f"| {'**%s**' % q.label(m) if m == n else q.label(m)} | {_params(q.params)} | {_num(q.value)} | "
                         f"{_num(q.mean)} | {_num(q.q90)} | {_num(q.worst)} | {q.failed} of {len(q.seeds)} | "
                         f"{_num(q.study_value)} |")
        lines.append("")
    if s.best_number is not None:
        lines += [f"Best trial on the study's own seeds: #{s.best_number}, {metric} {s.best_value!r} "
                  f"({_params(s.best_params)}).", ""]
    else:
        lines += ["No trial has a value: every one diverged or was pruned.", ""]
    trained = sum(c.get(v, 0) for v in TRAINED)
    lines += [f"{trained} trials trained: {c.get(CONVERGED, 0)} converged, {c.get(PARTLY_DIVERGED, 0)} partly "
              f"diverged (a minority of seeds diverged), {c.get(NOT_FIT, 0)} not fit (the loss stayed above "
              f"{NOT_FIT_FRACTION:g} of a constant prediction's), {c.get(DIVERGED, 0)} diverged (the median seed diverged: "
              f"PRUNED in Optuna, with constraint `diverged`); {c.get('pruned', 0)} pruned, {c.get('failed', 0)} "
              "failed. Every trial: trials.csv.", ""]
    if any(st.measured or st.predicted_init for st in s.stability.values()):
        lines += ["Where the learning rate stops training, per width (measured, and predicted by sharpness): "
                  "stability.csv, plots/stability.png.", ""]
    lines += ["Resume or top up the study: run the same command again (tag `bpexp.command`). Reproduce a trial: "
              "`bpexp reproduce <its run id>`."]
    return "\n".join(lines)


def model_note(summary: StudySummary, recommended: bool, run_id: str) -> str:
    """The description of the study's model in MLflow's Models tab: which trial's network it
    is, its config, its value, and how it stands to the study's other model."""
    s, metric = summary, summary.metric
    n = s.recommended_number if recommended else s.best_number
    lines = []
    if recommended:
        lines.append(f"### recommended_model: trial #{n} of study '{s.study_name}', the recommended network")
    else:
        lines.append(f"### best_model: trial #{n} of study '{s.study_name}', the best {metric} on the study's seeds")
    params = s.recheck[n].params if n in s.recheck else s.best_params
    lines += ["", f"Config: {_params(params)}.", ""]
    if n == s.best_number:
        lines += [f"{metric} on the study's seeds: {s.best_value!r} (the trial's value).", ""]
    if n in s.recheck:
        r = s.recheck[n]
        lines.append(f"{metric} over {len(r.seeds)} seeds (the study's and "
                     f"{sum(x in s.fresh_seeds for x in r.seeds)} fresh ones): "
                     f"median {r.value!r}, mean {_num(r.mean)}, worst {_num(r.worst)}; {r.failures()}.")
        lines.append("")
    m = s.recommended_number
    if not recommended and m is not None and m != n:
        lines += [f"Not the recommended network: the study recommends trial #{m} (`recommended_model`, "
                  f"the rule: {RECHECK_RULE}).", ""]
    elif not recommended and m == n:
        lines += ["It is also the recommended network (the re-check's rule: " + RECHECK_RULE + ").", ""]
    elif recommended:
        lines += [f"The best value on the study's own seeds is trial #{s.best_number}'s (`best_model`).", ""]
    lines.append(f"The trial's run: {run_id} (its weights: weights/final.json); `bpexp reproduce {run_id}` "
                 "retrains it.")
    return "\n".join(lines)


def _params(params: dict) -> str:
    return ", ".join(f"{k} {v!r}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items())


def _num(v) -> str:
    return "" if v is None else repr(v)

