"""Shared helpers: run the real `bpexp` command in a temporary folder, check a config's one-line
error in-process, read MLflow and Optuna back, and the sweep's invariants."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


# The study's end in one round (sweep.neighbours=0, sweep.recheck_final=0) unless a test says
# otherwise: tests/test_recheck.py tests the neighbours and the final round; elsewhere a sweep
# ends with exactly its n_trials trials, and the suite keeps to its 5 minutes (with both on in
# every sweep it took 6:35 against 5:20).
END_IN_ONE_ROUND = ("sweep.neighbours=0", "sweep.recheck_final=0")


def sweep_args(args) -> list[str]:
    """`bpexp` arguments with END_IN_ONE_ROUND added to a sweep that does not set those keys."""
    args = list(args)
    if not args or args[0] != "sweep":
        return args
    given = {a.split("=")[0].lstrip("+~") for a in args}
    return args + [o for o in END_IN_ONE_ROUND if o.split("=")[0] not in given]


def run_bpexp(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300,
              process: bool = False) -> subprocess.CompletedProcess:
    """`bpexp ARGS` in cwd, with no tracking URI inherited from the caller.

    In this test process by default (`in_process`): the same command line, config, training
    and recorder process, 3-5 s faster a call. In a process of its own (`python -m bpexp`)
    when the test needs one: an environment of its own (failpoints, credentials), a bound on
    a command that could hang, or a process to signal. A sweep ends in one round (sweep_args)."""
    args = tuple(sweep_args(args))
    if process or env:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        full_env.update(env or {})
        return subprocess.run([sys.executable, "-m", "bpexp", *args], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    return in_process(*args, cwd=cwd)


def in_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `bpexp ARGS` as `python -m bpexp` would (bpexp.cli.main), in this process: its exit
    status, stdout and stderr. The recorder process is kept from call to call, as a multirun
    keeps it from job to job (recorder.keep_between_jobs): MLflow is imported once per test
    worker, not once per command."""
    import contextlib
    import io
    import signal

    from bpexp import cli
    from bpexp.recording import recorder

    recorder.keep_between_jobs()
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MLFLOW_")}
    argv, here, sigterm = sys.argv, os.getcwd(), signal.getsignal(signal.SIGTERM)
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(here)
        sys.argv = argv
        signal.signal(signal.SIGTERM, sigterm)
        os.environ.update(saved)
    return subprocess.CompletedProcess(["bpexp", *args], code, out.getvalue(), err.getvalue())


def free_port() -> int:
    """A loopback port nothing listens on (as the kernel hands them out: free a moment ago)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bpexp(tmp_path):
    """Call as bpexp("train", "train.epochs=100"); runs in tmp_path."""
    return lambda *args, **kw: run_bpexp(*args, cwd=tmp_path, **kw)


@pytest.fixture
def local_store(tmp_path):
    """The MLflow client for the default sqlite store a run in tmp_path writes."""
    from mlflow.tracking import MlflowClient

    return lambda: MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")


def config_error(command: str, *args: str) -> str:
    """The one line `bpexp COMMAND ARGS` prints for a config it refuses before running, found
    in-process the way the command line finds it (bpexp.apps.precheck: compose, then validate).
    A subprocess would cost 0.7 s more a case; the tests that need one (exit status, files
    left behind, checks made at run time) run the real command."""
    import contextlib
    import io

    from bpexp.commands import apps

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        apps.precheck(command, list(args))
    assert exited.value.code == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1, err.getvalue()
    return lines[0]


def assert_clean_failure(r, tmp_path, key, value, secret=None):
    """Exit 2, one line naming key and value, no traceback, nothing recorded."""
    import optuna
    from mlflow.tracking import MlflowClient

    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and value in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    if secret:
        assert secret not in r.stderr + r.stdout
    db = tmp_path / "outputs" / "mlflow.db"
    if db.exists():  # the store may exist, but without any run
        client = MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    optuna_db = tmp_path / "outputs" / "optuna.db"
    if optuna_db.exists():
        for s in optuna.get_all_study_summaries(f"sqlite:///{optuna_db}"):
            assert s.n_trials == 0


def compose_sweep(*overrides: str):
    """`bpexp sweep`'s config with these overrides, as its schema objects (SweepAppConfig)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from bpexp.config.schema import register_schemas
    from bpexp.config.validation import validate_sweep

    register_schemas()
    with initialize_config_module("bpexp.conf", version_base="1.3"):
        cfg = OmegaConf.to_object(compose("sweep", overrides=list(overrides)))
    validate_sweep(cfg)  # as the sweep does: search-space entries become ParamSpecs
    return cfg


def load(tmp_path, name="lr_hidden"):
    """The study a sweep in tmp_path wrote."""
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/outputs/optuna.db")


def mlflow_runs(tmp_path, uri=None, experiment="bpexp"):
    """(client, parent runs, child runs) of the experiment a sweep in tmp_path wrote
    (to its default store, or to the store at `uri`)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri or f"sqlite:///{tmp_path}/outputs/mlflow.db")
    exp = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([exp], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("bpexp.role") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def check_invariants(tmp_path, n_trials, uri=None, experiment="bpexp"):
    """The sweep's invariants: n_trials trained (converged, partly diverged, not fit or
    diverged) besides the trials its end tried next to the best ones (bpexp/study/neighbours.py),
    one FINISHED child run per finished trial and none for failed ones, unique trial
    numbers, one parent run, nothing RUNNING, every child run's trial state and verdict Optuna's."""
    from collections import Counter

    from optuna.trial import TrialState

    from bpexp.results.outcome import TRAINED, verdict_of

    study = load(tmp_path)
    states = Counter(t.state for t in study.trials)
    assert sum(1 for t in study.trials if verdict_of(t) in TRAINED and "bpexp.neighbour_of" not in t.user_attrs) == n_trials
    assert states[TrialState.RUNNING] == 0
    client, parents, children = mlflow_runs(tmp_path, uri, experiment)
    assert len(parents) == 1
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    finished = Counter(int(c.data.tags["optuna.trial_number"]) for c in children if c.info.status == "FINISHED")
    for t in study.trials:
        expected = 1 if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else 0
        assert finished[t.number] == expected, (t.number, t.state)
        if t.state == TrialState.FAIL:  # no verdict it was never told with (optuna-dashboard shows attributes)
            assert t.user_attrs.get("bpexp.outcome") in (None, "failed"), (t.number, t.user_attrs)
    assert not [c for c in children if c.info.status == "RUNNING"]
    for c in children:  # one truth after faults too: each run's tags say what Optuna holds
        t = study.trials[int(c.data.tags["optuna.trial_number"])]
        assert c.data.tags.get("optuna.trial_state") == t.state.name, (t.number, t.state, c.data.tags)
        assert c.data.tags.get("bpexp.outcome") == (verdict_of(t) or "failed"), (t.number, t.state, c.data.tags)
    return study, client, parents[0], children


def hessian_eigenvalues(w: dict, x, y, activation: str):
    """Every eigenvalue of the loss Hessian of one network in the seed's shapes (w1 [H, D],
    b1 [H, 1], ...), by autograd on the plain formula: the reference for bpexp/training/sharpness.py."""
    import numpy as np
    import torch

    act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[activation]
    names = list(w)
    shapes = [w[k].shape for k in names]
    flat = torch.cat([w[k].reshape(-1) for k in names])

    def loss(theta):
        parts, i = {}, 0
        for k, shape in zip(names, shapes):
            n = int(np.prod(shape))
            parts[k] = theta[i:i + n].reshape(shape)
            i += n
        h = x.reshape(len(x), -1).T  # [D, N]
        depth = len(names) // 2
        for layer in range(1, depth):
            h = act(parts[f"w{layer}"] @ h + parts[f"b{layer}"])
        out = parts[f"w{depth}"] @ h + parts[f"b{depth}"]
        return ((out[0] - y) ** 2).mean()

    return np.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat).numpy())


@pytest.fixture
def servers():
    """The PostgreSQL database and MLflow tracking server .ci/run starts on loopback
    (BPEXP_TEST_PG_URL, BPEXP_TEST_MLFLOW_URI); under CI a missing one is a failure, not a skip."""
    pg, mlflow = os.environ.get("BPEXP_TEST_PG_URL"), os.environ.get("BPEXP_TEST_MLFLOW_URI")
    if not (pg and mlflow):
        if os.environ.get("CI"):
            pytest.fail("CI must provide BPEXP_TEST_PG_URL and BPEXP_TEST_MLFLOW_URI (see .ci/run)")
        pytest.skip("no PostgreSQL / MLflow server given (BPEXP_TEST_PG_URL, BPEXP_TEST_MLFLOW_URI)")
    return pg, mlflow


def pytest_sessionstart(session):
    """Build the compiled epoch loop (bpexp/training/compiled_epochs.py) once, in this process,
    before pytest-xdist starts its workers (its own sessionstart runs after this one): on a
    fresh checkout every worker and every `bpexp` process they start would otherwise build it
    at once, ~18 s of CPU each, until one of them has cached it."""
    if not hasattr(session.config, "workerinput"):
        from bpexp.training import compiled_epochs

        compiled_epochs.build()


def pytest_collection_modifyitems(items):
    """The slow tests (real engines, whole studies) first, the rest in their order after them:
    with `-n 2` a long test picked up last kept one core busy while the other sat idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
