"""Launchers: one command starts a study's workers on an engine, follows them and ends the study.

Real engines where this machine has them: processes here (always), a Ray head started by the
test on loopback, a Slurm cluster when `.ci/run` could start one (BPEXP_TEST_SLURM=1). The
Kubernetes Job is checked against the Kubernetes API's own models and its pods' command is run
as a pod runs it. The remote engines need the PostgreSQL database and MLflow server of
tests/test_scale_out.py.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from bpexp.config.schema import LauncherConfig, LauncherKind
from bpexp.launchers.workers import follow_command, worker_spec
from bpexp.results.outcome import TRAINED, verdict_of
from tests.conftest import check_invariants, free_port, run_bpexp, sweep_args
from tests.test_scale_out import MLFLOW, PG, check

FAST = ["sweep.seeds=1", "sweep.batch_size=2", "train.epochs=300", "tracking.log_plots=false",
        "tracking.log_model=false", "sweep.recheck_seeds=2", "sweep.progress=false"]


def password_of(url: str) -> str:
    return url.split("@")[0].rsplit(":", 1)[-1]


# ------------------------------------------------------------------ the workers' command
def test_a_workers_command_is_the_launchers_less_the_launcher_with_passwords_in_its_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = ["launcher=slurm", "launcher.workers=8", "sweep.n_trials=50", "sweep.storage=postgresql://u:se cr@t@db:5432/o",
            "tracking.uri=http://alice:pw-9x@mlf:5000", "sweep.progress=true"]
    cfg = LauncherConfig(kind=LauncherKind.slurm, cpus_per_worker=2)
    spec = worker_spec(cfg, args, "My Study", "postgresql://u:se cr@t@db:5432/o", "http://alice:pw-9x@mlf:5000")
    assert spec.args == ["sweep", "sweep.n_trials=50", "sweep.storage=postgresql://u@db:5432/o",
                         "tracking.uri=http://mlf:5000", "sweep.end=false", "sweep.progress=false"]
    assert spec.env["PGPASSWORD"] == "se cr@t" and spec.env["MLFLOW_TRACKING_PASSWORD"] == "pw-9x"
    assert spec.env["MLFLOW_TRACKING_USERNAME"] == "alice" and spec.env["OMP_NUM_THREADS"] == "2"
    assert spec.name == "bpexp-my-study" and spec.logs == tmp_path / "outputs" / "launch" / "My Study"
    follow = follow_command(args)
    assert "launcher.workers=0" in follow and "launcher.workers=8" not in follow
    assert "se cr@t" not in follow and "pw-9x" not in follow


@pytest.mark.parametrize("args,key", [
    (["launcher=local", "launcher.workers=-1"], "launcher.workers"),
    (["launcher=ray"], "sweep.storage"),  # sqlite: a file on this machine only
    (["launcher=kubernetes"], "launcher.image"),
    (["launcher=ray", "launcher.follow=false"], "launcher.follow"),
])
def test_a_launcher_that_cannot_start_its_workers_starts_nothing(tmp_path, args, key):
    r = run_bpexp("sweep", *args, *FAST, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"error: {key}=" in r.stderr, r.stderr
    assert not (tmp_path / "outputs" / "optuna.db").exists() and not (tmp_path / "outputs" / "launch").exists()


def test_no_slurm_here_is_one_line_before_the_study_is_touched(servers, tmp_path, monkeypatch):
    """launcher=slurm where `sbatch` is not on PATH (not a Slurm login node): exit 2, one line,
    no study created in the database; following a launch from there (workers=0) works."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    name = f"noslurm-{uuid.uuid4().hex[:8]}"
    r = run_bpexp("sweep", "launcher=slurm", f"sweep.storage={PG}", f"tracking.uri={MLFLOW}",
                  f"sweep.study_name={name}", *FAST, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "error: launcher='slurm'" in r.stderr, r.stderr
    assert "sbatch" in r.stderr
    assert name not in optuna.get_all_study_names(storage=PG)
    # Following a Slurm launch (launcher.workers=0) needs no Slurm here: it starts nothing.
    exp = f"noslurm-{uuid.uuid4().hex[:8]}"
    study_args = [f"sweep.storage={PG}", f"tracking.uri={MLFLOW}", f"sweep.study_name={name}",
                  f"tracking.experiment={exp}", "sweep.n_trials=2", *FAST]
    r = run_bpexp("sweep", "sweep.end=false", *study_args, cwd=tmp_path)  # a worker of the launch
    assert r.returncode == 0, r.stderr
    r = run_bpexp("sweep", "launcher=slurm", "launcher.workers=0", *study_args, cwd=tmp_path)
    assert r.returncode == 0 and "recommended trial #" in r.stdout, r.stderr
    check(name, exp, 2, password_of(PG))


def test_a_command_following_a_study_stops_when_the_database_server_stops_answering(servers, tmp_path, monkeypatch):
    """The launching command follows its workers by reading the study; a database server that
    stops answering (SIGSTOP, a partition) left it waiting for good. It beats as a worker does,
    for no trial, so the heartbeat's watch stops it: one line, exit 1. Here the server stops
    answering this process once the following begins (its reads wait), with the bounds short."""
    import threading

    from optuna.storages import RDBStorage

    from bpexp.commands import sweep as sweep_command
    from bpexp.study import workers
    from tests.conftest import in_process

    monkeypatch.setattr(workers, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(workers, "STOPPED_AFTER_S", 1.0)
    stopped, released = threading.Event(), threading.Event()

    def waiting(read):
        def call(self, *args, **kwargs):
            if stopped.is_set():
                released.wait(60)
            return read(self, *args, **kwargs)
        return call

    for read in ("_get_trials", "get_study_user_attrs"):
        monkeypatch.setattr(RDBStorage, read, waiting(getattr(RDBStorage, read)))
    following = sweep_command.follow

    def follow(*args):
        stopped.set()
        return following(*args)

    monkeypatch.setattr(sweep_command, "follow", follow)
    name = f"stopped-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    try:
        r = in_process("sweep", "launcher=local", "launcher.workers=0", f"sweep.storage={PG}",
                       f"sweep.study_name={name}", "sweep.n_trials=2", *FAST, cwd=tmp_path)
    finally:
        released.set()
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "the database server stopped answering" in r.stderr and time.monotonic() - t0 < 30


# ------------------------------------------------------------------ local
@pytest.mark.slow
def test_local_workers_share_the_study_one_dies_and_the_launcher_ends_it_once(tmp_path):
    """Three worker processes on one sqlite study, started at once (they race to create it); the
    first to train dies there as kill -9 kills; the others fail its trials (its pid is gone),
    share the rest (no trial number twice, a surplus trial failed, never trained) and finish;
    the launching command says so, trains the trials next to the best ones (sweep.neighbours),
    re-checks in two rounds and records the study once, and exits 0."""
    r = run_bpexp("sweep", "launcher=local", "launcher.workers=3", "sweep.n_trials=12", *FAST, "sweep.neighbours=1",
                  "sweep.recheck_final=2", "sweep.recheck_final_seeds=2", cwd=tmp_path,
                  env={"BPEXP_FAILPOINT": "training:1", "BPEXP_FAILPOINT_ONCE": str(tmp_path / "died")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "started 3 worker processes on this machine" in r.stdout and "recommended trial #" in r.stdout
    dead = re.search(r"1 of 3 workers failed \(worker ([012]): exit -9\)", r.stderr)  # the first to train
    assert dead, r.stderr
    study, client, parent, children = check_invariants(tmp_path, 12)
    assert parent.info.status == "FINISHED" and "recommended_value" in parent.data.metrics
    assert Counter(t.state for t in study.trials)[TrialState.FAIL] >= 1  # the dead worker's batch
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert len({c.data.tags["bpexp.worker"] for c in children}) >= 2  # the work really was shared
    assert all(t.state == TrialState.FAIL for t in study.trials if t.user_attrs.get("bpexp.surplus"))
    # the neighbours: trained by the launching command, once, each with a child run (check_invariants)
    extra = [t for t in study.trials if "bpexp.neighbour_of" in t.user_attrs]
    assert extra and f"training {len(extra)} trials next to the best ones" in r.stdout
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in extra)  # PRUNED: diverged
    assert sum(rc["final"] for rc in study.user_attrs["bpexp.recheck"].values()) == 2
    logs = tmp_path / "outputs" / "launch" / "lr_hidden"
    alive = [i for i in range(3) if i != int(dead[1])]
    assert all("this worker is done" in (logs / f"worker-{i}.log").read_text() for i in alive)
    assert f"worker-{dead[1]}.log" in os.listdir(logs)


# ------------------------------------------------------------------ Kubernetes
def _strict(data, model: str):
    """Every key of `data` is a field of the Kubernetes API model `model` (recursively), and the
    model accepts the values: a schema check without a cluster (kubectl --dry-run=client needs
    one for its schema)."""
    import kubernetes.client as k8s

    cls = getattr(k8s, model)
    fields = {v: k for k, v in cls.attribute_map.items()}
    unknown = set(data) - set(fields)
    assert not unknown, f"{model}: unknown fields {unknown}"
    kwargs = {}
    for key, value in data.items():
        kind = cls.openapi_types[fields[key]]
        if kind.startswith("list[V1"):
            value = [_strict(v, kind[5:-1]) for v in value]
        elif kind.startswith("V1"):
            value = _strict(value, kind)
        kwargs[fields[key]] = value
    return cls(**kwargs)  # required fields and enums checked by the model


def test_the_kubernetes_job_is_an_indexed_job_with_the_password_from_a_secret(servers, tmp_path):
    """launcher=kubernetes on a machine without a cluster: the Job is written, valid against
    the API's models, no password in it; its pods' command, run as each pod runs it (the
    Secret's password in $PGPASSWORD), trains the study, and `launcher.workers=0` ends it."""
    name, exp = f"k8s-{uuid.uuid4().hex[:8]}", f"k8s-{uuid.uuid4().hex[:8]}"
    study_args = [f"sweep.storage={PG}", f"tracking.uri={MLFLOW}", f"sweep.study_name={name}",
                  f"tracking.experiment={exp}", "sweep.n_trials=6", *FAST]
    r = run_bpexp("sweep", "launcher=kubernetes", "launcher.image=registry.example/bpexp:1", "launcher.workers=2",
                  "launcher.apply=false", *study_args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    job_file = tmp_path / "outputs" / "launch" / name / "job.yaml"
    assert f"wrote the Job for study '{name}' (2 workers) to {job_file}" in r.stdout
    text = job_file.read_text()
    assert password_of(PG) not in text and password_of(PG) not in r.stdout + r.stderr
    job = yaml.safe_load(text)
    _strict(job, "V1Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    rules = spec["podFailurePolicy"]["rules"]
    assert {"FailJob": [2], "Ignore": [130, 143]} == {r["action"]: r["onExitCodes"]["values"] for r in rules if "onExitCodes" in r}
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "bpexp-db", "key": "password"}
    # The pods, as Kubernetes runs them: the command, the plain env, the Secret, the index.
    assert container["command"][:2] == ["bpexp", "sweep"]
    plain = {k: e["value"] for k, e in env.items() if "value" in e}
    pods = [subprocess.Popen([shutil.which("bpexp") or "bpexp", *container["command"][1:]], cwd=tmp_path,
                             env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **plain,
                                  "PGPASSWORD": password_of(PG), "BPEXP_WORKER_INDEX": str(i)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in pods]
    assert [p.returncode for p in pods] == [0, 0], [o[-2000:] for o in outs]
    r = run_bpexp("sweep", "launcher=kubernetes", "launcher.image=registry.example/bpexp:1", "launcher.workers=0",
                  *study_args, cwd=tmp_path)
    assert r.returncode == 0 and "recommended trial #" in r.stdout, r.stderr
    check(name, exp, 6, password_of(PG))


# ------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real Ray head on loopback (`ray start --head`), stopped after the module's tests."""
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    r = subprocess.run([*ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                        "--disable-usage-stats", f"--temp-dir={temp}", "--node-ip-address=127.0.0.1"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    yield f"127.0.0.1:{port}"
    subprocess.run([*ray, "stop", "--force"], capture_output=True, timeout=120)


@pytest.mark.slow
def test_ray_tasks_share_the_study_one_dies_and_the_launcher_ends_it(servers, tmp_path, ray_head):
    name, exp = f"ray-{uuid.uuid4().hex[:8]}", f"ray-{uuid.uuid4().hex[:8]}"
    r = run_bpexp("sweep", "launcher=ray", f"launcher.address={ray_head}", "launcher.workers=2",
                  f"sweep.storage={PG}", f"tracking.uri={MLFLOW}", f"sweep.study_name={name}",
                  f"tracking.experiment={exp}", "sweep.n_trials=8", *FAST, cwd=tmp_path,
                  env={"BPEXP_FAILPOINT": "training:1", "BPEXP_FAILPOINT_ONCE": str(tmp_path / "died")}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "started 2 Ray tasks on" in r.stdout and "recommended trial #" in r.stdout
    # The first task to train dies there: Ray may start one task seconds after the other, long
    # enough for the other to train all 8 trials (CI saw it), so "worker 0 dies" was a race.
    assert re.search(r"1 of 2 workers failed \(worker [01]: exit -9\)", r.stderr), r.stderr
    assert password_of(PG) not in r.stdout + r.stderr
    study, children = check(name, exp, 8, password_of(PG))
    assert Counter(t.state for t in study.trials)[TrialState.FAIL] >= 1


def test_a_ray_address_where_no_cluster_answers_is_one_line(servers, tmp_path):
    t0 = time.monotonic()
    r = run_bpexp("sweep", "launcher=ray", f"launcher.address=127.0.0.1:{free_port()}", f"sweep.storage={PG}",
                  f"tracking.uri={MLFLOW}", f"sweep.study_name=nothing-{uuid.uuid4().hex[:8]}", *FAST, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "launcher.address=" in r.stderr, r.stderr
    assert "no Ray cluster answers there" in r.stderr and time.monotonic() - t0 < 60


# ------------------------------------------------------------------ Slurm
@pytest.fixture
def slurm():
    if not os.environ.get("BPEXP_TEST_SLURM"):
        pytest.skip("no Slurm cluster here (.ci/run starts one when Debian's slurm-wlm and munge start; "
                    "BPEXP_TEST_SLURM=1)")


@pytest.mark.slow
def test_a_slurm_array_trains_the_study_and_a_requeued_task_resumes(servers, slurm, tmp_path):
    """A real job array; task 0 is requeued once it runs (what preemption does: SIGTERM, back
    to the queue); its rerun joins the same study, which ends with n_trials trained."""
    name, exp = f"slurm-{uuid.uuid4().hex[:8]}", f"slurm-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "bpexp", *sweep_args(["sweep", "launcher=slurm", "launcher.workers=2", f"sweep.storage={PG}",
           f"tracking.uri={MLFLOW}", f"sweep.study_name={name}", f"tracking.experiment={exp}",
           "sweep.n_trials=10", *FAST])]
    launcher = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job = None
    for _ in range(120):  # task 0 running: requeue it
        time.sleep(1)
        script = tmp_path / "outputs" / "launch" / name / "workers.sbatch"
        q = subprocess.run(["squeue", "--noheader", "--array", "--name", f"bpexp-{name}", "--format=%i %T"],
                           capture_output=True, text=True)
        running = [line.split()[0] for line in q.stdout.splitlines() if line.endswith("RUNNING") and "_0" in line]
        if script.exists() and running:
            job = running[0]
            time.sleep(3)
            subprocess.run(["scontrol", "requeue", job], check=True)
            break
    out, err = launcher.communicate(timeout=600)
    assert job is not None, (out, err)
    assert launcher.returncode == 0, err[-3000:]
    assert "started Slurm job array" in out and "recommended trial #" in out
    check(name, exp, 10, password_of(PG))
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=1" in shown or "Invalid job id" in shown
    study = optuna.load_study(study_name=name, storage=PG)
    assert sum(1 for t in study.trials if verdict_of(t) in TRAINED) == 10
