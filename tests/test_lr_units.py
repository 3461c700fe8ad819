"""An lr searched in units of the range test's suggestion (bpexp/lr_units.py): each trial's
train.lr is its sampled multiple of the suggestion `bpexp lr-find` makes for its config, and
a config is range-tested once."""
from __future__ import annotations

import optuna
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from bpexp import lr_units, range_test
from bpexp.config import register_schemas
from bpexp.data import dataset_from_config
from bpexp.search_space import searched, suggest, trial_config
from bpexp.validation import validate_sweep


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
        for key, p in searched(cfg):
            suggest(t, key, p)
        trials.append(t)
    return trials


def test_each_trial_trains_its_multiple_of_the_range_tests_lr_and_a_config_is_tested_once(monkeypatch):
    cfg = sweep_config()
    data = dataset_from_config(cfg.data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    calls = []
    real = range_test.range_tests
    monkeypatch.setattr(lr_units, "range_tests", lambda f, configs, d: calls.append(len(configs)) or real(f, configs, d))
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


def test_absolute_lrs_are_left_alone():
    cfg = sweep_config("sweep.search_space.lr.unit=null", "sweep.search_space.lr.low=0.001",
                       "sweep.search_space.lr.high=1")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trials = asked(cfg, study, [4])
    lr_units.set_lrs(cfg, trials, None, {})
    assert set(trials[0].params) == {"train.lr", "model.hidden"} and 0.001 <= trials[0].params["train.lr"] <= 1
