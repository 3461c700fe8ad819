"""The parameters' importances for a study's figure, computed in the recorder process, and
Optuna's importance module imported without scikit-learn.

The recorder sets a study's pace (docs/findings.md, "Recording off the critical path"), and
`import optuna.importance` cost it 1.49 s of CPU, 1.45 s of it for an evaluator bpexp does not
use: the package imports its fANOVA evaluator, which imports scikit-learn's forests (and
scipy.stats through them). bpexp uses PED-ANOVA (optuna-dashboard's default), numpy only.
`optuna_importance` imports the package with scikit-learn held out: fANOVA's own guarded import
(optuna's try_import) then records it as missing, and the package costs 0.04 s of CPU
(measured after MLflow's imports, as in the recorder). Nothing else is changed: scikit-learn
imports as usual afterwards, in this process too; only FanovaImportanceEvaluator, imported
this way, would say scikit-learn is missing (bpexp never uses it).
"""
from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings
from types import ModuleType


class _HoldOut(importlib.abc.MetaPathFinder):
    """An import finder that refuses scikit-learn while it is on sys.meta_path."""

    def find_spec(self, name, path=None, target=None):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(f"{name}: held out (bpexp.recording.importances)")
        return None


def optuna_importance() -> ModuleType:
    """optuna.importance, imported without scikit-learn (see above)."""
    return imported_without_sklearn("optuna.importance")


def imported_without_sklearn(name: str) -> ModuleType:
    """Module `name`, imported with scikit-learn held out unless either is imported already; a
    module that cannot do without it (an ImportError) is imported as usual."""
    if name not in sys.modules and "sklearn" not in sys.modules:
        hold = _HoldOut()
        sys.meta_path.insert(0, hold)
        try:
            importlib.import_module(name)
        except ImportError:  # it needs scikit-learn after all: imported as usual below
            pass
        finally:
            sys.meta_path.remove(hold)
    return importlib.import_module(name)


def param_importances(trials: list) -> dict[str, float]:
    """Optuna's importances of the trials' parameters, by its default evaluator, PED-ANOVA (what
    optuna-dashboard shows; {} when it cannot tell, e.g. a parameter with a single value so
    far), from a study held in memory. Here, in the recorder process, not in the sweep's."""
    if not trials:
        return {}
    import optuna

    importance = optuna_importance()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.add_trials(spread_fixed_params(trials))
    with warnings.catch_warnings():  # e.g. "importances will be equal" on tiny studies
        warnings.simplefilter("ignore", UserWarning)
        try:
            return importance.get_param_importances(study, evaluator=importance.PedAnovaImportanceEvaluator())
        except (RuntimeError, ValueError):
            return {}


def spread_fixed_params(trials: list) -> list:
    """The trials, each parameter that Optuna holds as a one-point distribution (a value set,
    not sampled: train.lr in a study begun before lr_units.lr_distribution, with the lr searched
    in units of the range test) given the range of its values over the trials instead: an
    importance evaluator reads a one-point parameter as never varying and gives it importance 0,
    which read as "the lr does not matter". COMPLETE trials only: the ones importances read."""
    import optuna
    from optuna.distributions import FloatDistribution

    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    spread = {}
    for name in {k for t in done for k, d in t.distributions.items() if d.single() and isinstance(d, FloatDistribution)}:
        values = [t.params[name] for t in done if name in t.params]
        if len(set(values)) > 1:
            spread[name] = FloatDistribution(min(values), max(values), log=min(values) > 0)
    if not spread:
        return done
    return [optuna.trial.create_trial(params=t.params, distributions={**t.distributions, **{
        k: d for k, d in spread.items() if k in t.params}}, value=t.value) for t in done]
