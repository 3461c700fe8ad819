"""Bad configuration ends in one line naming the key and value, exit 2, nothing recorded."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from bpexp.config.schema import TrainAppConfig, register_schemas
from bpexp.config.validation import validate_train
from tests.conftest import config_error

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_fails_cleanly(bpexp, tmp_path):
    """Found when the run starts (the config itself is valid): still one line, nothing recorded."""
    r = bpexp("train", "train.device=cuda")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "train.device='cuda'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # no run was created


def test_a_multirun_is_checked_as_hydra_runs_it():
    """The product of the swept values: x_min=7 with x_max=10 is valid, though 7 > 5 (the
    default x_max) would not be; one bad combination is refused, naming it."""
    from bpexp.commands import apps

    apps.precheck("train", ["-m", "data.x_min=6,7", "data.x_max=10,20"])  # all four jobs valid: no exit
    line = config_error("train", "-m", "data.x_min=6,12", "data.x_max=10,20")
    assert "data.x_min=12" in line and "data.x_max=10" in line, line


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


def _readme_value(text: str):
    text = text.strip()
    if text in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[text]
    if text.startswith("["):
        return [v.strip() for v in text.strip("[]").split(",") if v.strip()]
    try:
        return float(text)
    except ValueError:
        return text


def test_readme_config_table_is_the_schema():
    """Every key of the schema is in the README's table, with the schema's default."""
    import re
    from pathlib import Path

    from bpexp.config.schema import LrFindAppConfig, SweepAppConfig

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("Add a searched key")]
    documented = {}
    for keys, defaults in re.findall(r"^\| ((?:`[\w.]+`(?:, )?)+) \| ([^|]+) \|", table, re.M):
        names = re.findall(r"`([\w.]+)`", keys)
        values = [v for v in defaults.split(", ")] if len(names) > 1 else [defaults]
        assert len(values) == len(names), (keys, defaults)
        documented.update(zip(names, values))
    schema = {}
    for tree in (OmegaConf.to_container(OmegaConf.structured(SweepAppConfig), enum_to_str=True),
                 OmegaConf.to_container(OmegaConf.structured(LrFindAppConfig), enum_to_str=True)):
        for group, values in tree.items():
            schema.update({f"{group}.{k}": v for k, v in values.items()})
    assert set(schema) - {"sweep.search_space"} == set(documented) - {"sweep.search_space"}
    for key, default in schema.items():
        if key == "sweep.search_space":
            continue
        want = [str(v) for v in default] if isinstance(default, list) else default
        got = _readme_value(documented[key])
        assert got == want or (isinstance(want, str) and got == want) or str(got) == str(want), (key, got, want)


def test_trial_config_and_config_tree_agree_with_omegaconf():
    """The fast dataclass paths give what OmegaConf's structured configs give (they replaced them)."""
    import json

    from omegaconf import OmegaConf

    from bpexp.config.schema import SweepAppConfig, TrainAppConfig
    from bpexp.recording.run_record import config_tree
    from bpexp.study.search_space import trial_config

    cfg = OmegaConf.to_object(OmegaConf.structured(SweepAppConfig))
    for params in [{"train.lr": 0.25, "model.hidden": 7}, {"train.lr": 1, "model.activation": "relu"},
                   {"model.hidden": "[6, 6]", "train.optimizer": "adam", "data.x_max": 6, "train.seed": 3}]:
        slow = OmegaConf.structured(TrainAppConfig(cfg.model, cfg.data, cfg.train, cfg.tracking))
        for k, v in params.items():
            OmegaConf.update(slow, k, json.loads(v) if isinstance(v, str) and v.startswith("[") else v)
        want = OmegaConf.to_container(slow, resolve=True, enum_to_str=True)
        got = config_tree(trial_config(cfg, params))
        assert got == want and json.dumps(got) == json.dumps(want), params
    assert config_tree(cfg) == OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    for bad in [{"train.epochs": 1.5}, {"train.lr": "abc"}, {"model.activation": "nope"}]:
        with pytest.raises(ValueError):
            trial_config(cfg, bad)
