"""An lr searched in units of the range test's suggestion (bpexp/study/lr_units.py): each trial's
train.lr is its sampled multiple of the suggestion `bpexp lr-find` makes for its config, and
a config is range-tested once."""
from __future__ import annotations

import optuna
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from bpexp.study import lr_units
from bpexp.study import range_test
from bpexp.config.schema import register_schemas
from bpexp.training.data import dataset_from_config
from bpexp.study.search_space import searched, suggest, trial_config
from bpexp.config.validation import validate_sweep


def composed(name: str, *overrides):
    register_schemas()
    with initialize_config_module("bpexp.conf", version_base="1.3"):
        return OmegaConf.to_object(compose(name, overrides=list(overrides)))


def sweep_config(*overrides):
    cfg = composed("sweep", *overrides)
    validate_sweep(cfg)
    return cfg


def asked(cfg, study, hidden: list[int]):
    trials = []
    for w in hidden:
        study.enqueue_trial({"model.hidden": w})
        t = study.ask()
        for key, p in searched(cfg.sweep.search_space):
            suggest(t, key, p)
        trials.append(t)
    return trials


def counting_range_tests(monkeypatch) -> list:
    calls = []
    real = range_test.range_tests
    monkeypatch.setattr(lr_units, "range_tests", lambda f, configs, d: calls.append(len(configs)) or real(f, configs, d))
    return calls


def test_each_trial_trains_its_multiple_of_the_range_tests_lr_and_a_config_is_tested_once(monkeypatch):
    cfg = sweep_config("sweep.n_trials=20")  # fewer trials than widths: tested as batches ask
    data = dataset_from_config(cfg.data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    calls = counting_range_tests(monkeypatch)
    tested: dict = {}
    first = asked(cfg, study, [3, 8, 3])
    lr_units.set_lrs(cfg, first, data, tested)
    assert calls == [2]  # widths 3 and 8: one population
    second = asked(cfg, study, [8, 16])
    lr_units.set_lrs(cfg, second, data, tested)
    assert calls == [2, 1]  # width 8 was tested already
    for t in first + second:
        # what `bpexp lr-find model.hidden=W` suggests for the trial's config
        alone = composed("lr-find", f"model.hidden={t.params['model.hidden']}")
        suggestion = range_test.range_test(alone, data)["suggested_lr"]
        assert t.user_attrs["bpexp.suggested_lr"] == suggestion
        assert t.params["train.lr"] == pytest.approx(t.params["train.lr / lr_find"] * suggestion, rel=1e-15)
        assert trial_config(cfg, t.params).train.lr == t.params["train.lr"]
        assert 0.1 <= t.params["train.lr / lr_find"] <= 3.0


def test_a_study_with_a_trial_for_every_config_tests_them_all_in_its_first_batch(monkeypatch):
    cfg = sweep_config("sweep.n_trials=40")  # 32 widths (model.hidden 1-32), 40 trials
    data = dataset_from_config(cfg.data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    calls = counting_range_tests(monkeypatch)
    tested: dict = {}
    first = asked(cfg, study, [5, 12])
    lr_units.set_lrs(cfg, first, data, tested)
    second = asked(cfg, study, [1, 32])
    lr_units.set_lrs(cfg, second, data, tested)
    assert calls == [32] and len(tested) == 32  # every width, one population, tested once
    lazily: dict = {}  # each alone, as a batch asking only for it tests it: the same lr, bit for bit
    for t in first + second:
        t2 = asked(cfg, study, [t.params["model.hidden"]])
        lr_units.set_lrs(sweep_config("sweep.n_trials=20"), t2, data, lazily)
        assert t2[0].user_attrs["bpexp.suggested_lr"] == t.user_attrs["bpexp.suggested_lr"]
    # a searched float beside the lr: configs without end, tested as batches ask
    assert lr_units.every_config(sweep_config(
        "+sweep.search_space.decay={key: train.decay, type: float, low: 0.1, high: 0.9}")) == []


def test_absolute_lrs_are_left_alone():
    cfg = sweep_config("sweep.search_space.lr.unit=null", "sweep.search_space.lr.low=0.001",
                       "sweep.search_space.lr.high=1")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trials = asked(cfg, study, [4])
    lr_units.set_lrs(cfg, trials, None, {})
    assert set(trials[0].params) == {"train.lr", "model.hidden"} and 0.001 <= trials[0].params["train.lr"] <= 1


def test_train_lr_is_one_dimension_of_the_study_for_importances_but_never_sampled(monkeypatch):
    """Every trial records train.lr with one distribution (lr_units.lr_distribution), so that
    importances (Optuna's, optuna-dashboard's) see the lr: with one point per trial they read it
    as a constant and gave it 0.00. The sampler never draws it: train.lr is multiple x suggestion."""
    from bpexp.study.search_space import make_sampler

    cfg = sweep_config("sweep.n_trials=20")
    data = dataset_from_config(cfg.data)
    study = optuna.create_study(sampler=make_sampler(cfg.sweep))
    tested: dict = {}
    for i in range(12):
        (t,) = asked(cfg, study, [3 + i % 4])
        lr_units.set_lrs(cfg, [t], data, tested)
        assert t.distributions["train.lr"] == lr_units.lr_distribution(cfg.sweep.search_space["lr"])
        assert t.params["train.lr"] == pytest.approx(t.params["train.lr / lr_find"] * t.user_attrs["bpexp.suggested_lr"],
                                                     rel=1e-15)
        study.tell(t, abs(t.params["train.lr"] - 0.25))  # a loss that only the lr decides
    importances = optuna.importance.get_param_importances(study)
    assert importances["train.lr"] > 0.1 and set(importances) == {"train.lr", "train.lr / lr_find", "model.hidden"}
    # a study begun when train.lr was a point per trial goes on that way (Optuna refuses to mix them)
    old = optuna.create_study(sampler=make_sampler(cfg.sweep))
    (t,) = asked(cfg, old, [3])
    t.suggest_float("train.lr", 0.1, 0.1)
    old.tell(t, 1.0)
    (t,) = asked(cfg, old, [4])
    lr_units.set_lrs(cfg, [t], data, tested)
    assert t.distributions["train.lr"].single() and t.params["train.lr"] == pytest.approx(
        t.params["train.lr / lr_find"] * t.user_attrs["bpexp.suggested_lr"], rel=1e-15)
