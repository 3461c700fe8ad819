"""sweep.tpe_history: TPE models the best trials and the newest ones past a bound
(bpexp/study/bounded_tpe.py); below it, it draws as Optuna's TPESampler does."""
from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from bpexp.study.bounded_tpe import BEST_KEPT, BoundedTPESampler, bounded


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("train.lr", 1e-3, 1.0, log=True)
    hidden = trial.suggest_int("model.hidden", 1, 32)
    return (math.log10(lr / 0.27)) ** 2 + 1 / hidden


def params_of(sampler, n: int) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=n)
    return [t.params for t in study.trials]


def tpe(cls, **kw):
    return cls(seed=3, multivariate=True, constant_liar=True, n_startup_trials=8, **kw)


def test_within_the_bound_the_draws_are_optunas_bit_for_bit():
    assert params_of(tpe(BoundedTPESampler, history=60), 60) == params_of(tpe(optuna.samplers.TPESampler), 60)


def test_past_the_bound_tpe_sees_the_best_the_newest_and_the_running():
    study = optuna.create_study()
    for i in range(100):  # values fall with the trial number but for 30 early trials, the best of all
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)}, value=(-1000.0 - i if i < 30 else -i),
                                                  distributions={"x": optuna.distributions.FloatDistribution(0, 100)}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING))
    trials = study.get_trials(deepcopy=False)
    seen = [t.number for t in bounded(trials, 40)]
    assert seen == [*range(5, BEST_KEPT + 5), *range(60, 101)]  # the 25 best (5-29), the newest 40, the running one
    assert bounded(trials, 100) is trials  # no more finished trials than the bound: all of them
    # past the bound the draws differ from unbounded TPE's (what the bound costs: docs/findings.md)
    assert params_of(tpe(BoundedTPESampler, history=20), 60) != params_of(tpe(optuna.samplers.TPESampler), 60)
