"""The study's last trials: the neighbours of its best configs, so that the re-check can choose them.

The re-check (bpexp/study/recheck.py) recommends among the trials the study tried. A 30-trial
TPE study has rarely tried the width next to its best near the right lr: its best is often 3
hidden units at lr ~0.29, which fails on about one seed in eight, and what it offers that never
fails is 6-24 units at lr ~0.06-0.11, 1.6-2.3x worse (docs/findings.md, "Seed risk"). With the lr
searched in units of each width's range test (lr_units), the multiple carries over to the next
width: 4 units at the 3-unit trial's multiple is a config near its own best lr.

So at the study's end, before the re-check, the `sweep.neighbours` best re-check candidates
(the best trial of each config apart from its lr) get their neighbours trained as trials: each
int key of the search space one step up and one step down, every other param kept (the lr as
the same multiple of the new config's range test, or the same lr where the lr is absolute, and
again with each log-scale float key / `sweep.neighbour_factor`), and each log-scale float key
(the lr's multiple, in the default study) / and x that factor (1.5). They are trials like any
other (a child run each, told to Optuna, user attribute and tag `bpexp.neighbour_of`: the trial
they are next to), trained on the study's seeds as one batch, and the re-check takes them as candidates beside its own.
Measured on unseen seeds (benchmarks/sample_efficiency.py, 20 sampler seeds, each on 32 seeds of
its own): at 30 trials the recommendation's median, against the grid's best judged on 1280
seeds, was 1.19x with the width's neighbours alone and is 1.03x with the lr's too, no unseen
seed failing either way; docs/findings.md, "Rare failures" and "Neighbours along the lr".

Everything here is read off the study's trials, so a resume that finds the neighbours trained
does not train them again, and one cut short trains what is missing.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator, Sequence

from optuna.trial import TrialState

from bpexp.config.schema import SweepAppConfig
from bpexp.runtime.failpoints import failpoint
from bpexp.study.recheck import candidates
from bpexp.study.search_space import param_name, searched
from bpexp.study.session import Session
from bpexp.study.workers import count, trained
from bpexp import names


def sampled(cfg: SweepAppConfig, params: dict) -> dict:
    """A trial's params as the sampler chose them: without train.lr where it is derived from a
    multiple of the range test (lr_units)."""
    derived = {key for key, p in searched(cfg.sweep.search_space) if p.unit}
    return {n: v for n, v in params.items() if n not in derived}


def either_side(cfg: SweepAppConfig, base: dict) -> Iterator[dict]:
    """A config's neighbours (its params, each a dict), inside the search space: every int key
    one step down and up, at the same float values and at every log-scale float key / the
    sweep.neighbour_factor; and every log-scale float key / and x that factor (the lr's multiple,
    whose best lies in a band too narrow for TPE's first 30 trials to have tried twice). Why the
    next width at a lower multiple too: near the edge of stability a multiple one width bears
    the next may not (a 30-trial study's best, 4 units at 1.36x its range test's lr, had 5 units
    at that multiple fail 7 of 19 seeds, where 5 units at 0.88x, lr 0.21, fail on none of 1280;
    docs/findings.md, "The next width at a lower lr")."""
    factor = cfg.sweep.neighbour_factor if cfg.sweep.neighbour_factor > 1 else None
    floats = [(param_name(k, p), p) for k, p in searched(cfg.sweep.search_space) if p.type == "float" and p.log]
    lower = [{name: base[name] / factor} for name, p in floats if p.low <= base[name] / factor] if factor else []
    for k, p in searched(cfg.sweep.search_space):
        name = param_name(k, p)
        value = base[name]
        if p.type == "int":
            step = int(p.step or 1)
            for v in (value - step, value + step):
                if p.low <= v <= p.high:
                    yield from ({**base, name: v, **other} for other in ({}, *lower))
        elif p.type == "float" and p.log and factor:
            yield from ({**base, name: v} for v in (value / factor, value * factor) if p.low <= v <= p.high)


def sources(cfg: SweepAppConfig, trials: Sequence) -> list:
    """The trials whose neighbours the study tries: the sweep.neighbours best re-check candidates
    among the trials that are not neighbours themselves (so that a resume finds the same ones)."""
    own = [t for t in trials if names.NEIGHBOUR_OF not in t.user_attrs]
    return candidates(cfg, own, cfg.sweep.neighbours) if cfg.sweep.recheck and cfg.sweep.neighbours else []


def neighbour_params(cfg: SweepAppConfig, trials: Sequence) -> list[tuple[int, dict]]:
    """(source trial number, sampled params) of each neighbour of the sources, in order, once
    each, leaving out a source's own params and values outside the search space."""
    out, seen = [], set()
    chosen = sources(cfg, trials)
    for t in chosen:
        seen.add(_key(sampled(cfg, t.params)))
    for t in chosen:
        for params in either_side(cfg, sampled(cfg, t.params)):
            if _key(params) not in seen:
                seen.add(_key(params))
                out.append((t.number, params))
    return out


def missing(cfg: SweepAppConfig, trials: Sequence, wanted: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """The neighbours (`wanted`: neighbour_params) no trial trained (COMPLETE or PRUNED), training (RUNNING: another command
    ending the study; a dead worker's was failed by take_over before) or waiting has the params
    of yet: one that FAILED is trained again. A WAITING trial, queued by enqueue_trial, holds its
    params in its system attribute `fixed_params` until it is asked."""
    have = {_key(sampled(cfg, t.params)) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)}
    have |= {_key(sampled(cfg, t.system_attrs.get("fixed_params", {}))) for t in trials if t.state == TrialState.WAITING}
    return [(n, p) for n, p in wanted if _key(p) not in have]


def neighbour_trials(cfg: SweepAppConfig, trials: Sequence, wanted: list[tuple[int, dict]]) -> list:
    """The trials with a value that have a neighbour's params (`wanted`): the re-check's extra candidates."""
    keys = {_key(p) for _, p in wanted}
    return [t for t in trials if t.value is not None and _key(sampled(cfg, t.params)) in keys]


def train_neighbours(cfg: SweepAppConfig, study, data, recording=None, heartbeat=None, tested=None) -> list:
    """Train the neighbours no trial has tried yet, as one batch of the study's Session (child
    runs, told to Optuna), and return every neighbour trial with a value (the re-check's extra
    candidates). Queued first (Optuna's enqueue_trial: the next asks take them, their params
    fixed), so that a neighbour queued by a command cut short is trained by the next. Which
    neighbours does not change as they train: their sources are never neighbours themselves."""
    trials = study.get_trials(deepcopy=False)
    wanted = neighbour_params(cfg, trials)
    for source, params in missing(cfg, trials, wanted):
        study.enqueue_trial(params, user_attrs={names.NEIGHBOUR_OF: source})
    failpoint("neighbours-queued")
    waiting = count(study, TrialState.WAITING)
    if waiting:
        n_trials = trained(study) + waiting
        f = cfg.sweep.neighbour_factor
        print(f"bpexp sweep: training {waiting} trials next to the best ones (each int key one step either side, "
              + (f"the lr multiple kept and / {f:g}; each log-scale float key x and / {f:g}" if f > 1 else
                 "the lr multiple kept") + ") for the re-check", flush=True)
        Session(replace(cfg, sweep=replace(cfg.sweep, n_trials=n_trials)), study, data, recording, heartbeat,
                None, tested).run()
    return neighbour_trials(cfg, study.get_trials(deepcopy=False), wanted)


def _key(params: dict) -> tuple:
    return tuple(sorted((n, repr(v)) for n, v in params.items()))
