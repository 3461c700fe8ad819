"""Own data (data=csv, several inputs) and deeper networks, end to end, and their bad input."""
from __future__ import annotations

import csv
import math
import random
import re

import pytest

from bpexp.recording import tracking
from bpexp.training.data import csv_dataset
from bpexp.recording.weights import parse_weights, weights_json
from tests.conftest import run_bpexp


def write_csv(path, rows=60, seed=1):
    rng = random.Random(seed)
    lines = ["a,b,label,y"]
    for i in range(rows):
        a, b = rng.uniform(-2, 2), rng.uniform(-2, 2)
        lines.append(f"{a:.5f},{b:.5f},p{i},{math.sin(a) * math.cos(b):.6f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    f = write_csv(tmp_path / "d.csv", rows=50)
    d = csv_dataset(str(f), ["a", "b"], "y", 0.2, split_seed=3)
    assert d.x.shape == (40, 2) and d.x_test.shape == (10, 2)
    rows = {tuple(r) for r in d.x.tolist()} | {tuple(r) for r in d.x_test.tolist()}
    assert len(rows) == 50  # every row on exactly one side
    again = csv_dataset(str(f), ["a", "b"], "y", 0.2, split_seed=3)
    other = csv_dataset(str(f), ["a", "b"], "y", 0.2, split_seed=4)
    assert again.x_test.equal(d.x_test) and not other.x_test.equal(d.x_test)
    one = csv_dataset(str(f), ["a"], "y", 0.2, split_seed=3)
    assert one.x.shape == (40,)  # one input: the seed's [N] layout


def test_train_a_deep_network_on_two_csv_inputs_then_reproduce(bpexp, tmp_path, local_store):
    write_csv(tmp_path / "d.csv")
    r = bpexp("train", "data=csv", "data.path=d.csv", "data.inputs=[a,b]", "model.hidden=[8,8]",
              "train.optimizer=adam", "train.lr=0.02", "train.epochs=800")
    assert r.returncode == 0, r.stderr
    client = local_store()
    (run,) = client.search_runs([client.get_experiment_by_name("bpexp").experiment_id])
    p = run.data.params
    assert p["model.hidden"] == "[8, 8]" and p["data.inputs"] == "['a', 'b']"
    assert p["data.path"] == str(tmp_path / "d.csv")  # absolute: reproducible from anywhere
    loss = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(loss, key=lambda m: m.step)[-1].value < 0.05  # sin(a) cos(b) has variance ~0.2
    client.download_artifacts(run.info.run_id, "weights", str(tmp_path / "dl"))
    w = parse_weights((tmp_path / "dl" / "weights" / "final.json").read_text())
    assert [w[k].shape for k in ("w1", "b1", "w2", "b2", "w3", "b3")] == [(8, 2), (8, 1), (8, 8), (8, 1), (1, 8), (1, 1)]
    (tmp_path / "elsewhere").mkdir()
    again = run_bpexp("reproduce", run.info.run_id, "--tracking-uri", f"sqlite:///{tmp_path}/outputs/mlflow.db",
                      cwd=tmp_path / "elsewhere")
    assert again.returncode == 0 and "bit for bit" in again.stdout, again.stderr
    cmp = bpexp("compare")  # a list value (data.inputs) is one cell of compare's table.csv
    table = re.search(r"in (outputs/compare-\w+)/", cmp.stdout).group(1)
    assert [row["data.inputs"] for row in csv.DictReader(open(tmp_path / table / "table.csv"))] == ["['a', 'b']"]
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,3\n")  # the file changed since: MLflow's copy is used
    assert run.data.tags["bpexp.data_sha256"] and client.list_artifacts(run.info.run_id, "data")
    again = run_bpexp("reproduce", run.info.run_id, "--tracking-uri", f"sqlite:///{tmp_path}/outputs/mlflow.db",
                      cwd=tmp_path / "elsewhere")
    assert again.returncode == 0 and "bit for bit" in again.stdout, again.stderr


@pytest.mark.slow
def test_sweep_on_csv_data_by_test_loss(bpexp, tmp_path, local_store):
    write_csv(tmp_path / "d.csv")
    r = bpexp("sweep", "data=csv", "data.path=d.csv", "data.inputs=[a,b]", "sweep.metric=test_loss",
              "sweep.n_trials=6", "sweep.seeds=1", "train.epochs=200", "sweep.progress=false")
    assert r.returncode == 0, r.stderr
    assert "best trial" in r.stdout
    parent = re.search(r"MLflow parent run (\w+)", r.stdout).group(1)
    client = local_store()
    assert [a.path for a in client.list_artifacts(parent, "data")] == ["data/d.csv"]
    child = tracking.child_runs(client, parent)[0]
    assert not client.list_artifacts(child.info.run_id, "data")  # once per sweep, not per trial
    (tmp_path / "d.csv").unlink()
    again = bpexp("reproduce", child.info.run_id)
    assert again.returncode == 0 and "bit for bit" in again.stdout, again.stderr


def test_weights_files_of_any_depth_round_trip():
    import numpy as np

    w = {"w1": np.ones((3, 2)), "b1": np.zeros((3, 1)), "w2": np.ones((4, 3)), "b2": np.zeros((4, 1)),
         "w3": np.ones((1, 4)), "b3": np.zeros((1, 1))}
    back = parse_weights(weights_json(w))
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in w.items()}
    bad = dict(w, w2=np.ones((4, 2)))  # does not chain onto w1
    with pytest.raises(ValueError, match="w2, b2"):
        parse_weights(weights_json(bad))


