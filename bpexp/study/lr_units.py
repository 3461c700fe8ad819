"""A learning rate searched in units of the lr range test's suggestion (`unit: lr_find`).

The best constant lr of full-batch gradient descent sits just below the edge of stability,
and that edge moves with the network: on the seed's task the best lr falls from ~0.3 at 3
hidden units to ~0.06 at 32 (a dense grid, docs/findings.md, "How many trials"). Searched in absolute
terms, lr and width make a thin diagonal ridge that a sampler has to find twice over. The
range test (bpexp/study/range_test.py, `bpexp lr-find`'s defaults: 500 epochs of a rising lr on 3 seeds) finds that edge for each
config in a fraction of a trial's cost, and its suggestion lands within 0.6-2.3x of the best
lr at every width from 3 to 32. In its units the ridge is a band near 1 across all widths,
and the sampler searches one thing at a time (measured, benchmarks/sample_efficiency.py, 10
sampler seeds: a 30-trial default study's recommendation, retrained on unseen seeds, went from
1.23x the grid's best to 1.09x; docs/findings.md, "How many trials").

So a trial samples the multiple ("train.lr / lr_find") with the other keys, then its config
without the lr is range-tested (one population for the batch, or for every config the study
can try in its first batch, `every_config`; a config already tested is not tested again: the
test is deterministic, so every worker and every resume finds the same lr),
and the trial's `train.lr` parameter is set to multiple x suggestion (`set_lr`: the sampler is
not asked, search_space.DerivedParams hands the value over), with one distribution for every
trial (`lr_distribution`), so that importances see the lr as the dimension it is. train.lr, in Optuna, MLflow, the CSVs
and the figures, is then the lr the trial trained with; the multiple is a parameter of its
own, and the suggestion is the trial's user attribute and its child run's tag `bpexp.suggested_lr`
(the tag `bpexp lr-find` gives its run).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, replace
from typing import Sequence

from bpexp.config.schema import LrFindConfig, SweepAppConfig
import optuna

from bpexp.study.range_test import DIVIDE_BY, range_tests
from bpexp.study.search_space import choices, param_name, searched, trial_config
from bpexp import names



def relative(cfg: SweepAppConfig):
    """(key, spec) of the lr searched in units of the range test, or None."""
    return next(((k, p) for k, p in searched(cfg.sweep.search_space) if p.unit), None)


def set_lrs(cfg: SweepAppConfig, trials: Sequence, data, tested: dict) -> None:
    """Give each asked trial its train.lr: its sampled multiple x the range test's suggestion
    for its config. `tested` (config -> suggested lr) carries the tests across batches."""
    found = relative(cfg)
    if found is None or not trials:
        return
    key, p = found
    if not tested:  # the study's first batch: every config it can try, when few enough
        test_every_config(cfg, data, tested)
    configs = {t.number: trial_config(cfg, t.params) for t in trials}
    ident = {n: _without_lr(c) for n, c in configs.items()}
    _test({ident[n]: c for n, c in configs.items()}, data, tested)
    for t in trials:
        unit = tested[ident[t.number]]
        lr = t.params[param_name(key, p)] * unit
        t.set_user_attr(names.SUGGESTED_LR, unit)
        set_lr(t, key, lr, lr_distribution(p))


def lr_distribution(p) -> optuna.distributions.FloatDistribution:
    """train.lr's distribution in Optuna, the same for every trial: every lr the multiples
    [p.low, p.high] of any suggestion can make (the range test suggests between its lr_min
    divided by the largest DIVIDE_BY and its lr_max)."""
    f = LrFindConfig()
    return optuna.distributions.FloatDistribution(p.low * f.lr_min / max(DIVIDE_BY.values()), p.high * f.lr_max,
                                                  log=True)


def set_lr(t, key: str, lr: float, distribution) -> None:
    """The trial's lr as its parameter `key`, with `distribution` (search_space.DerivedParams
    hands the value over). A study begun before it had train.lr with a distribution of one
    point per trial; Optuna refuses a log distribution for the same name there: so there too."""
    sampler = t.study.sampler
    if not hasattr(sampler, "derive") or not distribution._contains(distribution.to_internal_repr(lr)):
        t.suggest_float(key, lr, lr)
        return
    sampler.derive(t.number, key, lr)
    try:
        t.suggest_float(key, distribution.low, distribution.high, log=True)
    except ValueError:  # "Cannot set different log configuration to the same parameter name"
        sampler.values.pop((t.number, key), None)
        t.suggest_float(key, lr, lr)


def test_every_config(cfg: SweepAppConfig, data, tested: dict) -> None:
    """Range-test `every_config` not yet in `tested`, as one population. A sweep does it before
    its first batch, while the recorder process still imports MLflow and opens the store."""
    if relative(cfg) is not None:
        _test({_without_lr(c): c for c in every_config(cfg)}, data, tested)


def _test(configs: dict, data, tested: dict) -> None:
    """Range-test the configs ({_without_lr(config): config}) not in `tested`, as one population."""
    todo = {i: c for i, c in configs.items() if i not in tested}
    if todo:
        got = range_tests(LrFindConfig(), list(todo.values()), data)
        tested.update((i, g["suggested_lr"]) for i, g in zip(todo, got))


def every_config(cfg: SweepAppConfig) -> list:
    """Every train config the study can try, its lr aside, when its other searched keys are
    ints and choices that make no more configs than the study has trials; else none.

    Tested in the first batch, as one population, they cost less than the same tests a batch
    at a time: the default study's 32 widths take ~1.1 s, where its 100 trials tested them in 10
    populations for ~3 s (2-core machine). A study that could try more configs than it has trials
    tests what its batches ask for."""
    key, _ = relative(cfg)
    axes = []
    for k, p in searched(cfg.sweep.search_space):
        if k == key:
            continue
        if p.type == "categorical":
            axes.append((k, choices(p)))
        elif p.type == "int":
            axes.append((k, list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))))
        else:
            return []
    if math.prod(len(values) for _, values in axes) > cfg.sweep.n_trials:
        return []
    return [trial_config(cfg, dict(zip((k for k, _ in axes), combo)))
            for combo in itertools.product(*(values for _, values in axes))]


def _without_lr(c) -> str:
    """What the range test's result depends on: the config, with its lr (and where to record) set aside."""
    return repr((asdict(c.model), asdict(c.data), asdict(replace(c.train, lr=0.0))))
