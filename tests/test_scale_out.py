"""Several workers on one study in PostgreSQL, recording to an MLflow tracking server.

Needs the real servers: .ci/run starts PostgreSQL and `mlflow server` (PostgreSQL backend) on
loopback and sets BPEXP_TEST_PG_URL and BPEXP_TEST_MLFLOW_URI. Under CI a missing server is a
failure, not a skip.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bpexp.results.outcome import TRAINED, verdict_of
from tests.conftest import sweep_args

PG = os.environ.get("BPEXP_TEST_PG_URL")
MLFLOW = os.environ.get("BPEXP_TEST_MLFLOW_URI")


def start_workers(n, tmp_path, study, experiment, n_trials, extra=(), first_env=None):
    """n workers on the study; the first with `first_env` added to its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    cmd = [sys.executable, "-m", "bpexp", "sweep", f"sweep.n_trials={n_trials}", "sweep.seeds=1",
           "sweep.batch_size=3", "train.epochs=400", "sweep.progress=false", "tracking.log_plots=false", "tracking.log_model=false",
           f"sweep.storage={PG}", f"tracking.uri={MLFLOW}", f"sweep.study_name={study}",
           f"tracking.experiment={experiment}", *extra]
    cmd = [*cmd[:3], *sweep_args(cmd[3:])]
    procs = []
    for i in range(n):
        d = tmp_path / f"worker{i}"  # as on separate machines: nothing shared but the servers
        d.mkdir(parents=True)
        procs.append(subprocess.Popen(cmd, cwd=d, env={**env, **((first_env or {}) if i == 0 else {})},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True))
    return procs


def check(study_name, experiment, n_trials, password):
    study = optuna.load_study(study_name=study_name, storage=PG)
    states = Counter(t.state for t in study.trials)
    assert sum(1 for t in study.trials if verdict_of(t) in TRAINED) == n_trials and states[TrialState.RUNNING] == 0
    client = MlflowClient(MLFLOW)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("bpexp.role") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_id == study.user_attrs["mlflow.parent_run_id"]
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    finished = Counter(int(c.data.tags["optuna.trial_number"]) for c in children if c.info.status == "FINISHED")
    assert finished == Counter(t.number for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    assert not [c for c in children if c.info.status == "RUNNING"]
    for r in runs:  # credentials are never recorded
        assert password not in " ".join([*r.data.params.values(), *r.data.tags.values()])
    return study, children


@pytest.mark.slow
def test_a_dying_worker_does_not_stop_three_others_that_share_the_study(servers, tmp_path):
    """A worker dies as kill -9 kills, its first batch asked, claimed and training (a
    failpoint: no race with other workers' speed); three workers on the study then fail its
    trials (its pid is gone), share the rest and finish the study, no password in what they
    print or record. (Workers that create a study on PostgreSQL at once: tests/test_launchers.py,
    whose launchers start theirs together.)"""
    name, exp = f"die-{uuid.uuid4().hex[:8]}", f"die-{uuid.uuid4().hex[:8]}"
    (dying,) = start_workers(1, tmp_path / "first", name, exp, 12, first_env={"BPEXP_FAILPOINT": "training:1"})
    dying.communicate(timeout=600)
    assert dying.returncode == -signal.SIGKILL
    assert Counter(t.state for t in optuna.load_study(study_name=name, storage=PG).trials)[TrialState.RUNNING] == 3
    procs = start_workers(3, tmp_path / "others", name, exp, 12)
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-6000:] for o in outs]
    password = PG.split("@")[0].rsplit(":", 1)[-1]
    assert all(password not in o[0] + o[1] for o in outs)
    study, children = check(name, exp, 12, password)
    assert Counter(t.state for t in study.trials)[TrialState.FAIL] >= 3  # the dead worker's batch
    assert len({c.data.tags["bpexp.worker"] for c in children}) >= 2  # the work was shared


def test_wrong_credentials_fail_before_training(tmp_path):
    """A server that refuses the credentials: one clear line, exit 2, nothing trained."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="wrong-pw")
        r = subprocess.run([sys.executable, "-m", "bpexp", "sweep", f"tracking.uri=http://127.0.0.1:{server.server_port}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert r.returncode == 2 and "tracking.uri" in r.stderr and "refused user 'alice' (HTTP 401)" in r.stderr
    assert "wrong-pw" not in r.stderr + r.stdout and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs" / "optuna.db").exists()


def test_workers_writing_one_new_tag_at_once_all_succeed(tmp_path):
    """Hand-started workers each record the study's end on the shared parent run at once; MLflow
    inserts a new tag key after reading that it is not there, so concurrent first writes of one
    key fail ('UNIQUE constraint failed', 'duplicate key value'; 39 of 60 such writes with
    MLflow's own client on this sqlite store, when measured). The recorder's client writes again
    and every write lands."""
    import threading

    from bpexp.recording.tracking import SharedRunsClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MlflowClient(uri)
    run = first.create_run(first.create_experiment("race")).info.run_id
    errors = []
    for round_ in range(10):
        barrier = threading.Barrier(6)

        def write(i, key=f"end.{round_}"):
            client = SharedRunsClient(MlflowClient(uri))
            barrier.wait()
            try:
                client.set_tag(run, key, str(i))
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert not errors
    assert {f"end.{r}" for r in range(10)} <= set(first.get_run(run).data.tags)
