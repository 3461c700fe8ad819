"""Hardening: bad input, divergence, kill -9, secrets, safe loading. Concurrent workers on one
sqlite study: tests/test_launchers.py (launcher=local); on PostgreSQL: tests/test_scale_out.py.

Bad input as a whole: tests/test_bad_input.py.
"""
from __future__ import annotations

import os
import shutil
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bpexp.recording import tracking
from bpexp.recording import weights
from bpexp.config.validation import load_train_config
from tests.conftest import check_invariants, load, mlflow_runs, run_bpexp

FAST = ["train.epochs=150", "sweep.progress=false", "tracking.log_plots=false", "tracking.log_model=false", "sweep.seeds=1"]


def test_unwritable_output_directory(tmp_path):
    (tmp_path / "outputs").write_text("a file where bpexp's output folder should be")
    r = run_bpexp("train", "train.epochs=10", cwd=tmp_path, timeout=30)
    assert r.returncode == 2 and "tracking.uri" in r.stderr and "outputs" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_every_divergence_up_to_lr_10_is_recorded_and_the_sweep_goes_on(tmp_path):
    """Diverged trials (lr up to 10) have no value anywhere: no stand-in in Optuna, no
    `objective` or `train_loss` in MLflow; each seed's measured losses end before it diverged."""
    r = run_bpexp("sweep", "sweep.n_trials=10", "sweep.sampler=random", "sweep.search_space.lr.low=0.01",
                  "sweep.search_space.lr.high=10", "train.epochs=300", "sweep.progress=false",
                  "tracking.log_plots=false", "tracking.log_model=false", "sweep.seeds=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study, client, parent, children = check_invariants(tmp_path, 10)
    n_diverged = 0
    for c in children:
        exploded = "train_loss" not in c.data.metrics  # a diverged run has no curve of its own
        seed = client.get_metric_history(c.info.run_id, "train_loss_seed_99_diverged" if exploded else "train_loss")
        assert (max(m.step for m in seed) == 299) != exploded  # a diverged seed stopped early
        assert all(m.value <= 1e4 for m in seed)  # only measured losses, below train.diverge_above
        assert (c.data.tags["bpexp.outcome"] == "diverged") == exploded
        if exploded:
            assert "objective" not in c.data.metrics
            assert all(m.step < int(c.data.tags["diverged_epoch"]) for m in seed)
        n_diverged += exploded
    assert n_diverged > 0 and f"{n_diverged} diverged (the median seed diverged: PRUNED in Optuna)" in r.stdout
    diverged = [t for t in study.trials if t.user_attrs.get("bpexp.outcome") == "diverged"]
    assert len(diverged) == n_diverged and all(t.value is None and t.state == TrialState.PRUNED for t in diverged)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["parent-created", "training:2", "recording:2", "told:2"])
def test_kill_9_at_each_point_then_resume(tmp_path, point):
    """kill -9 while creating the parent run, while training, while recording, after telling;
    the same command again restores every invariant of the sweep."""
    args = ["sweep", "sweep.n_trials=9", "sweep.batch_size=3", *FAST]
    r = run_bpexp(*args, cwd=tmp_path, env={"BPEXP_FAILPOINT": point})
    assert r.returncode == -9, r.stderr
    r = run_bpexp(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study, client, parent, children = check_invariants(tmp_path, 9)
    failed = {t.number for t in study.trials if t.state == TrialState.FAIL}
    for c in children:
        if int(c.data.tags["optuna.trial_number"]) in failed:
            assert c.info.status == "KILLED"
    if point != "parent-created":
        assert failed  # the batch in flight was failed, not lost or counted


def test_secrets_never_reach_mlflow(tmp_path, monkeypatch):
    """A password in the storage or tracking URI (config, command line) is redacted in params,
    tags and every artifact, through the real recorder into a real store."""
    from bpexp.config.schema import TrainAppConfig
    from bpexp.training.data import make_dataset
    from bpexp.training.population import Member, TrainSpec, train_population
    from bpexp.recording.recorder import Recorder
    from bpexp.results.outcome import trial_outcome
    from bpexp.recording.run_record import config_tree, run_record

    secret_uri = "postgresql://alice:s3cr3t-pw@db.example:5432/optuna"
    args = [f"sweep.storage={secret_uri}", "tracking.uri=http://bob:hunter2@h:5000"]  # the command line
    cfg = TrainAppConfig()
    tree = config_tree(cfg)
    tree["tracking"]["uri"] = "http://bob:hunter2@h:5000"
    tree["storage_note"] = secret_uri
    data = make_dataset("sin", -5, 5, 20)
    result = train_population([Member(4, "tanh", 0.01, 99)], data, TrainSpec(20))[0]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with Recorder(uri, "secrets") as rec:
        run_id = rec.new_run("r", tracking.run_tags("sweep", args), run_record(tree, [result], trial_outcome([result], "train_loss"), data, True)).result()
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    everything = [*run.data.params.values(), *run.data.tags.values()]
    client.download_artifacts(run_id, "", str(tmp_path / "dl"))
    everything += [p.read_text() for p in (tmp_path / "dl").rglob("*") if p.is_file()]
    text = "\n".join(everything)
    assert "s3cr3t-pw" not in text and "hunter2" not in text
    assert "postgresql://alice:***@db.example:5432/optuna" in text  # redacted, not dropped


@pytest.mark.parametrize("password", ["se cr3t pw", "se'cr3t", 'se"cr3t', "p@ss/w rd"])
def test_a_password_of_any_characters_never_reaches_mlflow(tmp_path, password):
    """Redaction does not depend on a password's characters (a space or a quote ends a URL in
    text): the command line's passwords are remembered and hidden in params, tags and files,
    in this process and in the recorder's."""
    from bpexp.config.schema import TrainAppConfig
    from bpexp.recording.recorder import Recorder
    from bpexp.recording.run_record import config_tree, run_record
    from bpexp.results.outcome import trial_outcome
    from bpexp.runtime import redaction
    from bpexp.training.data import make_dataset
    from bpexp.training.population import Member, TrainSpec, train_population

    uri = f"http://alice:{password}@h:5000"
    args = [f"tracking.uri={uri}"]
    redaction.remember(*args)  # as bpexp.cli.main does with its arguments
    assert password not in redaction.redact(f"tracking.uri={uri!r}: no server answers")
    tree = config_tree(TrainAppConfig())
    tree["tracking"]["uri"] = uri
    data = make_dataset("sin", -5, 5, 20)
    result = train_population([Member(4, "tanh", 0.01, 99)], data, TrainSpec(20))[0]
    store = f"sqlite:///{tmp_path}/mlflow.db"
    with Recorder(store, "secrets") as rec:
        run_id = rec.new_run("r", tracking.run_tags("train", args),
                             run_record(tree, [result], trial_outcome([result], "train_loss"), data, False)).result()
    client = MlflowClient(store)
    run = client.get_run(run_id)
    client.download_artifacts(run_id, "", str(tmp_path / "dl"))
    text = "\n".join([*run.data.params.values(), *run.data.tags.values(),
                      *(p.read_text() for p in (tmp_path / "dl").rglob("*") if p.is_file())])
    assert password not in text and "http://alice:***@h:5000" in text


# ------------------------------------------------------------------ safe loading
@pytest.fixture
def recorded_run(tmp_path):
    r = run_bpexp("train", "train.epochs=200", "model.hidden=5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("bpexp").experiment_id])[0]
    return client, run.info.run_id


def test_reproduce_a_train_run_bit_for_bit(tmp_path, recorded_run, monkeypatch):
    from bpexp.recording import recorder

    client, run_id = recorded_run
    started, start = [], recorder._process
    monkeypatch.setattr(recorder, "_process", lambda *a: started.append(a) or start(*a))
    r = run_bpexp("reproduce", run_id, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "reproduced bit for bit" in r.stdout and "largest relative difference: 0" in r.stdout
    # A process that keeps its recorder between commands (a multirun; this test's) reads through
    # the train run's recorder: no process started
    assert not started
    # The run is read by a process of its own (recorder.reader) while this one imports torch:
    # the command's own process never imports MLflow.
    probe = f"import sys\nfrom bpexp import cli\ntry:\n    cli.main(['reproduce', '{run_id}'])\n" \
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules, 'mlflow' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    assert r.stdout.split()[-3:] == ["0", "True", "False"] and "reproduced bit for bit" in r.stdout, r.stderr


def test_reproduce_detects_tampered_weights(tmp_path, recorded_run):
    client, run_id = recorded_run
    final = client.download_artifacts(run_id, "weights/final.json", str(tmp_path / "w"))
    w = weights.parse_weights(Path(final).read_text())
    w["w2"] = w["w2"] * 1.001
    client.log_text(run_id, weights.weights_json(w), "weights/final.json")
    r = run_bpexp("reproduce", run_id, cwd=tmp_path)
    assert r.returncode == 1 and "MISMATCH" in r.stderr and "final w2" in r.stderr


@pytest.mark.parametrize("artifact", ["config.yaml", "config_target", "weights/initial.json", "weights/extra_key"])
def test_crafted_files_are_rejected_without_running_code(tmp_path, recorded_run, artifact):
    client, run_id = recorded_run
    marker = tmp_path / "pwned"
    if artifact == "config.yaml":
        client.log_text(run_id, f"!!python/object/apply:os.system ['touch {marker}']\n", "config.yaml")
        expect = "not plain YAML"
    elif artifact == "config_target":
        client.log_text(run_id, "model:\n  _target_: os.system\n  hidden: 4\n", "config.yaml")
        expect = "does not fit the train schema"
    elif artifact == "weights/initial.json":
        (tmp_path / "initial.json").write_bytes(pickle.dumps({"w1": 1}))
        client.log_artifact(run_id, str(tmp_path / "initial.json"), "weights")
        expect = "weights"
    else:
        client.log_text(run_id, '{"w1": [[1]], "b1": [[1]], "w2": [[1]], "b2": [[1]], "__class__": "os.system"}',
                        "weights/initial.json")
        expect = "not a bpexp weights file"
    r = run_bpexp("reproduce", run_id, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert expect in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_load_train_config_accepts_what_train_records(recorded_run, tmp_path):
    client, run_id = recorded_run
    text = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path / "c"))).read_text()
    cfg = load_train_config(text)
    assert cfg.model.hidden == 5 and cfg.train.epochs == 200


@pytest.mark.slow
def test_reproduce_a_sweep_child(tmp_path):
    r = run_bpexp("sweep", "sweep.n_trials=2", "sweep.seeds=2", *FAST[:3], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _, _, children = mlflow_runs(tmp_path)
    for c in children:
        r = run_bpexp("reproduce", c.info.run_id, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert len(load(tmp_path).trials) == 2


@pytest.mark.parametrize("tamper", ["nested json", "garbage curve", "symlinked config", "symlinked folder", "huge epochs"])
def test_tampered_artifacts_are_one_line(tmp_path, recorded_run, capsys, tamper):
    """Reproduce reads what a store holds as untrusted input: one line and exit 2, in-process."""
    from bpexp.commands.reproduce import reproduce

    client, run_id = recorded_run
    run = client.get_run(run_id)
    root = Path(run.info.artifact_uri.replace("file://", ""))
    if tamper == "nested json":
        (root / "weights" / "initial.json").write_text("[" * 100_000 + "]" * 100_000)
        expect = "nested too deep"
    elif tamper == "garbage curve":
        (root / "curves" / "loss_curve.csv").write_bytes(b"epoch,train_loss\n\x00\x00garbage\n")
        expect = "curves/loss_curve.csv"
    elif tamper == "symlinked config":
        (root / "config.yaml").unlink()
        (root / "config.yaml").symlink_to("/dev/zero")
        expect = "symlink or not a regular file"
    elif tamper == "symlinked folder":  # the run's artifacts: a link to a folder elsewhere
        elsewhere = tmp_path / "elsewhere"
        shutil.copytree(root, elsewhere)
        (elsewhere / "config.yaml").write_text("secret-outside: s3cr3t-text\n")
        shutil.rmtree(root)
        root.symlink_to(elsewhere)
        expect = "config.yaml: lies under a symlinked folder"
    else:
        text = (root / "config.yaml").read_text().replace("epochs: 200", "epochs: 1000000000000")
        (root / "config.yaml").write_text(text)
        expect = "train.epochs=1000000000000"
    rc = reproduce(run_id, f"sqlite:///{tmp_path}/outputs/mlflow.db")
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and len(err.strip().splitlines()) == 1, err
    assert "s3cr3t-text" not in err


def test_reproduce_compares_the_curve_at_the_epochs_recorded(tmp_path, recorded_run, capsys):
    """loss_curve.csv holds the log points (and the last epoch); one changed value among them is a
    mismatch, a file of every epoch (what an earlier bpexp wrote) reproduces as well, and rows
    out of order are refused."""
    from bpexp.commands.reproduce import curve_diff, recorded_curve, reproduce

    client, run_id = recorded_run
    path = Path(client.get_run(run_id).info.artifact_uri.replace("file://", "")) / "curves" / "loss_curve.csv"
    text = path.read_text()
    epochs, values = recorded_curve(text, 99)
    assert epochs.tolist() == [*range(0, 200, 2), 199] and len(text.splitlines()) == 1 + 101
    rows = text.splitlines()
    cells = rows[50].split(",")
    assert cells[0] == "98"
    rows[50] = ",".join([cells[0], repr(float(cells[1]) * (1 + 1e-5)), *cells[2:]])
    path.write_text("\n".join(rows) + "\n")
    assert reproduce(run_id, f"sqlite:///{tmp_path}/outputs/mlflow.db") == 1
    assert "MISMATCH: seed 99 train_loss curve differs by 1e-05" in capsys.readouterr().err
    every = np.arange(200, dtype=np.float64)  # an every-epoch curve: compared at each of its epochs
    assert curve_diff(every, (np.arange(200), every.copy())) == 0
    assert curve_diff(every, (np.arange(0, 200, 2), every[::2])) == float("inf")  # ends before the last epoch
    assert curve_diff(every[:150], (epochs, every[epochs])) == float("inf")  # a divergence moved
    with pytest.raises(ValueError, match="line 3 is not a row of epoch and losses"):
        recorded_curve("epoch,train_loss\n5,1.0\n4,2.0\n", 99)


def test_reproduce_never_calls_nan_weights_bit_for_bit():
    from bpexp.commands.reproduce import max_rel_diff

    nan, inf = float("nan"), float("inf")
    assert max_rel_diff([1.0, nan], [1.0, nan]) == 0  # the same divergence, reproduced
    assert max_rel_diff([1.0, 2.0], [1.0, nan]) == inf  # recorded NaN, reproduced finite
    assert max_rel_diff([nan, 2.0], [1.0, 2.0]) == inf
    assert max_rel_diff([inf], [inf]) == 0 and max_rel_diff([inf], [-inf]) == inf
    assert max_rel_diff([1.0], [1.0 + 1e-9]) < 1e-8
