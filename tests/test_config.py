"""Bad configuration ends in one line naming the key and value, exit 2, nothing recorded."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from bpexp.config import TrainAppConfig, register_schemas, validate_train

BAD_TRAIN = [
    ("train.lr=0", "train.lr"),
    ("train.lr=-1", "train.lr"),
    ("train.lr=nan", "train.lr"),
    ("train.lr=inf", "train.lr"),
    ("train.lr=abc", "train.lr"),
    ("model.hidden=0", "model.hidden"),
    ("model.hidden=1.5", "model.hidden"),
    ("train.epochs=0", "train.epochs"),
    ("data.x_min=5", "data.x_min"),
    ("data.x_min=7", "data.x_min"),
    ("data.n_points=1", "data.n_points"),
    ("data.fn=tan", "data.fn"),
    ("model.activation=softmax", "model.activation"),
    ("model.hiden=4", "model.hiden"),
    ("train.device=tpu", "train.device"),
    ("data.noise=-0.1", "data.noise"),
]
if not torch.cuda.is_available():
    BAD_TRAIN.append(("train.device=cuda", "train.device"))


@pytest.mark.parametrize("override,key", BAD_TRAIN)
def test_bad_train_value_fails_cleanly(bpexp, tmp_path, override, key):
    r = bpexp("train", override)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    value = override.split("=", 1)[1]
    assert key in lines[0] and value in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # no run was created


def test_bad_value_in_a_multirun_sweep_fails_before_any_run(bpexp, tmp_path):
    r = bpexp("train", "-m", "train.lr=0.1,-2", "train.epochs=10")
    assert r.returncode == 2
    assert "train.lr=-2.0" in r.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_defaults_are_the_seed():
    register_schemas()
    with initialize_config_module("bpexp.conf", version_base="1.3"):
        cfg = compose("train")
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, TrainAppConfig)
    validate_train(obj)
    assert (obj.model.hidden, obj.model.activation) == (4, "tanh")
    assert (obj.data.fn, obj.data.x_min, obj.data.x_max, obj.data.n_points) == ("sin", -5.0, 5.0, 20)
    assert (obj.data.noise, obj.data.n_test) == (0.0, 200)
    assert (obj.train.lr, obj.train.epochs, obj.train.seed) == (0.01, 5000, 99)
    assert obj.tracking.uri is None and obj.tracking.experiment == "bpexp"
