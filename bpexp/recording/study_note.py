"""The study's answer, where a user looks first: the parent run's description in MLflow
(tag mlflow.note.content, markdown, shown on the run's overview). Values at full precision:
MLflow's metric bars round ~7e-4 to "0.00"."""
from __future__ import annotations

from bpexp.results.summary import StudySummary


def study_note(summary: StudySummary) -> str:
    s, metric = summary, summary.metric
    c = s.counts
    lines = []
    n = s.recommended_number
    if n is not None:
        r = s.recheck[n]
        seeds = len(r.seeds)
        worst = f", worst seed {r.worst!r}" if r.worst is not None else ""
        lines += [f"### Recommended: trial #{n}: {_params(r.params)}", "",
                  f"{metric} **{r.value!r}**: the median over its {seeds} seeds (the study's and "
                  f"{len(s.recheck_seeds)} fresh ones, {_seeds(s.recheck_seeds)}){worst}; "
                  f"{len(r.diverged_seeds)} of {seeds} seeds diverged.", "",
                  f"The rule: the {len(s.recheck)} best trials were trained again on the fresh seeds; of those whose "
                  "every seed converged, the one whose worst seed is best (recheck.csv, recommended_config.yaml).", ""]
        lines += ["| trial | params | median | worst seed | diverged seeds | value on the study's seeds |",
                  "|---|---|---|---|---|---|"]
        for m, q in s.recheck.items():
            lines.append(f"| {'**#%d**' % m if m == n else '#%d' % m} | {_params(q.params)} | {_num(q.value)} | "
                         f"{_num(q.worst)} | {len(q.diverged_seeds)} of {len(q.seeds)} | {_num(q.study_value)} |")
        lines.append("")
    elif s.recheck:
        lines += ["### No recommendation: every re-checked trial's median seed diverged on the fresh seeds", ""]
    if s.best_number is not None:
        lines += [f"Best trial on the study's own seeds: #{s.best_number}, {metric} {s.best_value!r} "
                  f"({_params(s.best_params)}).", ""]
    else:
        lines += ["No trial has a value: every one diverged or was pruned.", ""]
    trained = c.get("converged", 0) + c.get("partly diverged", 0) + c.get("diverged", 0)
    lines += [f"{trained} trials trained: {c.get('converged', 0)} converged, {c.get('partly diverged', 0)} partly "
              f"diverged (a minority of seeds diverged), {c.get('diverged', 0)} diverged (the median seed diverged: "
              f"PRUNED in Optuna, with constraint `diverged`); {c.get('pruned', 0)} pruned, {c.get('failed', 0)} "
              "failed. Every trial: trials.csv.", ""]
    if any(st.measured or st.predicted_init for st in s.stability.values()):
        lines += ["Where the learning rate stops training, per width (measured, and predicted by sharpness): "
                  "stability.csv, plots/stability.png.", ""]
    lines += ["Resume or top up the study: run the same command again (tag `bpexp.command`). Reproduce a trial: "
              "`bpexp reproduce <its run id>`."]
    return "\n".join(lines)


def _params(params: dict) -> str:
    return ", ".join(f"{k} {v!r}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items())


def _num(v) -> str:
    return "" if v is None else repr(v)


def _seeds(seeds: list) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0]) if seeds else ""
