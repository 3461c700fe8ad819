"""The end of a study: re-check its top trials on many fresh init seeds, and recommend by risk.

A trial's value is the median over the study's own seeds (train.seed .. +sweep.seeds-1). A
user trains the recommendation with a seed of their own, so what matters is how a config
behaves on seeds nobody tuned on, failures included. Measured (docs/findings.md, "Seed risk"):
at 3 hidden units and lr 0.25-0.31, about one seed in eight never fits (MSE ~0.27, 365x the
median), at 4 units none does; a 100-trial study crowned the 3-unit config, fine on its 3
seeds. So `sweep.recheck` trials (`candidates`: the best of each config apart from its lr),
and the trials the study's end tried next to the best ones (bpexp/study/neighbours.py),
are trained again on their own seeds and
`sweep.recheck_seeds` fresh ones (the seeds after the study's: 16 by default), as one
population: a population member computes exactly what it computes alone, so the study's seeds
give back their recorded numbers. 5 configs x 35 seeds x 5000 epochs is one population of 175
small networks (~2.5 s on 2 cores). Then a final round (`rechecked`): the best
sweep.recheck_final (3) by the rule train on sweep.recheck_final_seeds (80) more, and the
recommendation is the best of them over all their 99 seeds: a config failing on 1 seed in 20
shows a failure there with probability 1 - 0.95**99 = 99 % (on the first round's 19 seeds: 62 %).
While the best of the final round failed on a seed, the next 3 that failed on none of round 1's
enter it too (`challengers`), so that a config is never recommended for failing less than
rivals that trained on fewer seeds.

Each is read as a trial is (bpexp/results/outcome.py) over all its seeds: median, 90th
percentile, worst, mean, and its failed seeds (diverged, or stuck far above its median). The
recommendation (`best_of`, among the finalists) has the fewest failed seeds, then the lowest mean loss over its
seeds: the mean prices a rare stuck seed at what it costs the user who draws it (1 of 35
seeds at 0.27 adds 7.7e-3, 10x a good median), where the median ignores it and the worst
seed lets one seed's luck decide among configs that never fail (issue 15's rule; measured
against both in docs/findings.md).

The best trial stays what Optuna says it is (the best value on the study's seeds); the
recommendation is named as such everywhere: the parent run's `recommended.*` tags and
`recommended_*` metrics, `recheck.csv`, `recheck_seeds.csv` and plots/recheck_seeds.png, the
study's user attributes `bpexp.recheck` and `bpexp.recommended`, each re-checked child run's
`recheck_<metric>*` metrics, the study's description and the console.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional, Sequence

from bpexp.config.schema import SweepAppConfig
from bpexp.results.outcome import NOT_FIT, VALUED, Outcome, recheck_rank, trial_outcome
from bpexp.training.data import constant_loss
from bpexp.training.population import train_population
from bpexp.config.specs import member_of, train_spec
from bpexp.study.search_space import param_name, searched, study_seeds, trial_config
from bpexp import names


def recheck_seeds(cfg: SweepAppConfig) -> list[int]:
    """The first round's fresh seeds: the sweep.recheck_seeds seeds after the study's own."""
    first = cfg.train.seed + cfg.sweep.seeds
    return list(range(first, first + cfg.sweep.recheck_seeds))


def final_seeds(cfg: SweepAppConfig) -> list[int]:
    """The final round's fresh seeds: the sweep.recheck_final_seeds seeds after the first round's."""
    first = cfg.train.seed + cfg.sweep.seeds + cfg.sweep.recheck_seeds
    return list(range(first, first + cfg.sweep.recheck_final_seeds))


def top_trials(trials: Sequence, k: int) -> list:
    """The k best trials with a value (Optuna's FrozenTrials), best first."""
    valued = [t for t in trials if t.value is not None]
    return sorted(valued, key=lambda t: (t.value, t.number))[:k]


def candidates(cfg: SweepAppConfig, trials: Sequence, k: int) -> list:
    """The k trials to re-check: the best trial of each config apart from its lr (each width, for
    the default study), best first; then, if there are fewer such configs than k, the next best
    trials. Not simply the k best trials: a sampler piles its trials up where the study's seeds
    did best, and the k best are then one width at k lrs, a width that may fail on a seed in
    eight (3 units; docs/findings.md, "Seed risk"), with nothing to recommend in its place."""
    lr_names = {n for key, p in searched(cfg.sweep.search_space) if key == "train.lr" for n in (key, param_name(key, p))}
    first, rest, seen = [], [], set()
    for t in top_trials(trials, len(trials)):
        shape = tuple(sorted((n, repr(v)) for n, v in t.params.items() if n not in lr_names))
        (rest if shape in seen else first).append(t)
        seen.add(shape)
    return (first + rest)[:k]


def and_neighbours(top: Sequence, neighbours: Sequence) -> list:
    """The re-check's candidates: `top`, then the neighbour trials (bpexp/study/neighbours.py) not among them."""
    have = {t.number for t in top}
    return [*top, *(t for t in neighbours if t.number not in have)]


def train_seeds(cfg: SweepAppConfig, trials: Sequence, data, seeds: Sequence[int]) -> dict[int, list]:
    """Each trial's results (MemberResults) on `seeds`, every trial and seed one population."""
    members = [replace(member_of(trial_config(cfg, t.params)), seed=s) for t in trials for s in seeds]
    if not members:
        return {t.number: [] for t in trials}
    results = train_population(members, data, train_spec(cfg.train, sharpness=False))
    n = len(seeds)
    return {t.number: results[i * n:(i + 1) * n] for i, t in enumerate(trials)}


def outcomes_of(cfg: SweepAppConfig, data, results: dict[int, list]) -> dict[int, Outcome]:
    metric = str(cfg.sweep.metric)
    constant = constant_loss(data, metric)
    return {n: trial_outcome(rs, metric, constant) for n, rs in results.items() if rs}


def rechecked(cfg: SweepAppConfig, trials: Sequence, data) -> tuple[dict[int, Outcome], list[int]]:
    """The re-check in two rounds; returns (each trial's outcome, the finalists).

    Round 1: every candidate on the study's seeds and sweep.recheck_seeds fresh ones. Round 2:
    the sweep.recheck_final best of them by the rule (`ranking`) on sweep.recheck_final_seeds
    more, then as many more at a time as long as `challengers` names some. Why: the more
    candidates a round has, the likelier its winner is one whose seeds were lucky (a config
    failing on 1 seed in 20 shows no failure on 35 seeds 17 % of the time), and a candidate near
    the edge of the lr is what the best ones are. Measured (docs/findings.md,
    "Neighbours, and a final round"): with the neighbours re-checked too, one round recommended
    configs that failed on 11 of 1280 unseen seeds at 30 trials, two rounds on 3 (as many as
    without the neighbours). The finalists' outcomes are over all their seeds; the others' over
    round 1's."""
    own = study_seeds(cfg.train.seed, cfg.sweep.seeds)
    first = train_seeds(cfg, trials, data, own + [s for s in recheck_seeds(cfg) if s not in own])
    outcomes = outcomes_of(cfg, data, first)
    entrants = ranking(outcomes)[:cfg.sweep.recheck_final] if cfg.sweep.recheck_final_seeds else []
    if len(entrants) < 2:  # nothing left to decide
        return outcomes, []
    finalists: list[int] = []
    while entrants:
        more = train_seeds(cfg, [t for t in trials if t.number in entrants], data, final_seeds(cfg))
        outcomes.update(outcomes_of(cfg, data, {n: first[n] + more[n] for n in entrants}))
        finalists += entrants
        entrants = challengers(outcomes, finalists)[:cfg.sweep.recheck_final]
    return outcomes, finalists


def challengers(outcomes: dict[int, Outcome], finalists: Sequence[int]) -> list[int]:
    """The trials that earn the final round after it: while the best finalist failed on a seed,
    those outside it that failed on none of round 1's seeds (and fit), by the rule. A finalist
    that fails in the final round would otherwise win on the count of its failures against
    rivals that never trained on as many seeds. Measured (docs/findings.md, "A final round
    until its winner holds"): a 30-trial study's finalists, all 4 units at lr 0.14-0.21 (clean
    on 19 seeds), failed 1-3 of 99 seeds each, and the one failing 1 was recommended over a
    9-unit trial outside the final (0 of 19); with 400 final seeds instead of 80, the same."""
    leader = best_of(outcomes, finalists)
    if leader is None or not outcomes[leader].failed_seeds:
        return []
    return [n for n in ranking(outcomes) if n not in finalists and not outcomes[n].failed_seeds
            and outcomes[n].verdict != NOT_FIT]


def ranking(outcomes: dict[int, Outcome]) -> list[int]:
    """The trials whose median seed has a value, best first: the fewest failed seeds (diverged
    or stuck), then the lowest mean over its seeds (outcome.recheck_rank); a config that does
    not fit (its median above a tenth of a constant prediction's loss: 2 hidden units, whose
    seeds all sit near 0.27 and so none is "stuck") after every one that does."""
    valued = {n: o for n, o in outcomes.items() if o.verdict in VALUED}
    return sorted(valued, key=lambda n: (valued[n].verdict == NOT_FIT,
                                         *recheck_rank(len(valued[n].failed_seeds), valued[n].mean, n)))


def best_of(outcomes: dict[int, Outcome], finalists: Sequence[int] = ()) -> Optional[int]:
    """The trial to recommend: the first of the `ranking` of the finalists (of every trial,
    without a final round). None if every such trial's median seed diverged."""
    ranked = ranking({n: o for n, o in outcomes.items() if not finalists or n in finalists})
    return ranked[0] if ranked else None


def recheck_study(cfg: SweepAppConfig, study, data, neighbours: Sequence = ()) -> None:
    """Re-check the study's best trials and keep the result in the study (user attributes
    `bpexp.recheck`: trial number -> verdict and the figures over all its seeds, each seed's
    final metric, its diverged and stuck seeds; `bpexp.recommended`: the trial number, or
    None), where every worker and resume read it. `neighbours`: the trials the study's end tried
    next to its best (bpexp/study/neighbours.py), re-checked beside the candidates."""
    if not cfg.sweep.recheck:
        return
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    outcomes, finalists = rechecked(cfg, and_neighbours(candidates(cfg, done, cfg.sweep.recheck), neighbours), data)
    study.set_user_attr(names.RECHECK, {str(n): recheck_record(o, n in finalists) for n, o in outcomes.items()})
    study.set_user_attr(names.RECOMMENDED, best_of(outcomes, finalists))


def recheck_record(o: Outcome, final: bool = False) -> dict:
    """A re-checked config as the study keeps it (JSON: Optuna's user attributes); `final`: it
    trained in the final round too."""
    finite = lambda v: None if v is None or not math.isfinite(v) else v  # noqa: E731
    return {"verdict": o.verdict, "final": final, "value": o.value, "mean": finite(o.mean), "q90": finite(o.quantile(0.9)),
            "worst": finite(o.quantile(1.0)), "seeds": list(o.seeds), "diverged_seeds": list(o.diverged_seeds),
            "stuck_seeds": list(o.stuck_seeds), "seed_values": {str(s): v for s, v in o.seed_values.items()}}
