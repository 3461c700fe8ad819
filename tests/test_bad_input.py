"""Bad input, as one table: the command, its arguments, and the key and value its one-line
error names (exit 2, before anything runs). Rows are checked as the command line checks them
(bpexp.commands.apps.precheck: compose, then validate, in this process). What is found only
when the command starts (a store to reach, a device, every value a search space can produce)
runs the real command in a process of its own: exit 2, one line, nothing recorded."""
from __future__ import annotations

import pytest

from tests.conftest import assert_clean_failure, config_error, free_port, run_bpexp

CSV = ["data=csv", "data.path=d.csv", "data.inputs=[a,b]"]  # files made by `bad_files`, in the test's folder

BAD_INPUT = [
    # ------------------------------------------------------------- train values
    ("train", ["train.lr=0"], "train.lr", "0"),
    ("train", ["train.lr=-1"], "train.lr", "-1"),
    ("train", ["train.lr=nan"], "train.lr", "nan"),
    ("train", ["train.lr=inf"], "train.lr", "inf"),
    ("train", ["train.lr=abc"], "train.lr", "abc"),
    ("train", ["model.hidden=0"], "model.hidden", "0"),
    ("train", ["model.hidden=1.5"], "model.hidden", "1.5"),
    ("train", ["model.hidden=[8,0]"], "model.hidden", "[8, 0]"),
    ("train", ["model.hidden=[]"], "model.hidden", "[]"),
    ("train", ["model.hidden=wide"], "model.hidden", "wide"),
    ("train", ["train.epochs=0"], "train.epochs", "0"),
    ("train", ["data.x_min=5"], "data.x_min", "5"),
    ("train", ["data.x_min=7"], "data.x_min", "7"),
    ("train", ["data.n_points=1"], "data.n_points", "1"),
    ("train", ["data.fn=tan"], "data.fn", "tan"),
    ("train", ["model.activation=softmax"], "model.activation", "softmax"),
    ("train", ["model.hiden=4"], "model.hiden", "4"),
    ("train", ["+model.hiden=4"], "model.hiden", "4"),
    ("sweep", ["+model.hiden=8"], "model.hiden", "8"),
    ("train", ["train.device=tpu"], "train.device", "tpu"),
    ("train", ["data.noise=-0.1"], "data.noise", "-0.1"),
    ("train", ["train.seed=18446744073709551617"], "train.seed", "18446744073709551617"),
    ("train", ["train.seed=-1"], "train.seed", "-1"),
    ("train", ["data.x_min=-1e308", "data.x_max=1e308"], "data.x_min", "-1e+308"),
    # ------------------------------------------------------------- sweep values
    ("sweep", ["sweep.tpe_history=-1"], "sweep.tpe_history", "-1"),
    ("sweep", ["sweep.sampler=bayes"], "sweep.sampler", "bayes"),
    ("sweep", ["sweep.pruner=sometimes"], "sweep.pruner", "sometimes"),
    ("sweep", ["sweep.n_trials=0"], "sweep.n_trials", "0"),
    ("sweep", ["sweep.seeds=0"], "sweep.seeds", "0"),
    ("sweep", ["sweep.neighbours=-1"], "sweep.neighbours", "-1"),
    ("sweep", ["sweep.neighbour_factor=0.5"], "sweep.neighbour_factor", "0.5"),
    ("sweep", ["sweep.neighbour_factor=nan"], "sweep.neighbour_factor", "nan"),
    ("sweep", ["sweep.recheck_final=-2"], "sweep.recheck_final", "-2"),
    ("sweep", ["sweep.recheck_final_seeds=-1"], "sweep.recheck_final_seeds", "-1"),
    ("sweep", ["sweep.metric=accuracy"], "sweep.metric", "accuracy"),
    ("sweep", ["sweep.register_as=a/b"], "sweep.register_as", "a/b"),
    ("sweep", ["sweep.register_as=' '"], "sweep.register_as", "' '"),
    ("sweep", ["sweep.register_as=.."], "sweep.register_as", ".."),
    ("sweep", ["tracking.experiment=''"], "tracking.experiment", "''"),
    ("sweep", ["tracking.experiment=" + "x" * 5000], "tracking.experiment", "5000 characters"),
    ("sweep", ["sweep.study_name=" + "s" * 600], "sweep.study_name", "600 characters"),
    ("sweep", ["sweep.storage=sqlite:///:memory:"], "sweep.storage", ":memory:"),
    ("train", ["tracking.uri=http://u:pässwörd@127.0.0.1:9"], "tracking.uri", "not a Hydra override as written: quote"),
    # ------------------------------------------------------------- the search space
    ("sweep", ["~sweep.search_space.lr", "~sweep.search_space.hidden"], "sweep.search_space", "{}"),
    ("sweep", ["sweep.search_space.lr.low=5"], "sweep.search_space.lr.low", "5"),
    ("sweep", ["sweep.search_space.lr.low=0"], "sweep.search_space.lr.low", "0"),
    ("sweep", ["sweep.search_space.lr.low=0.5", "sweep.search_space.lr.high=0.5"], "sweep.search_space.lr.low", "0.5"),
    ("sweep", ["sweep.search_space.lr.low=0.5", "sweep.search_space.lr.high=0.1"], "sweep.search_space.lr.low", "0.5"),
    ("sweep", ["sweep.search_space.hidden.high=1.5"], "sweep.search_space.hidden.high", "1.5"),
    ("sweep", ["sweep.search_space.lr.type=normal"], "sweep.search_space.lr.type", "normal"),
    ("sweep", ["sweep.search_space.hidden.unit=lr_find"], "sweep.search_space.hidden.unit", "lr_find"),
    ("sweep", ["sweep.search_space.lr.key=train.rate"], "sweep.search_space.lr.key", "train.rate"),
    ("sweep", ["+sweep.search_space.lr2={key: train.lr, type: float, low: 0.001, high: 0.1}"],
     "sweep.search_space.lr2.key", "train.lr"),
    ("sweep", ["+sweep.search_space.extra={key: model.activation, typ: categorical}"], "sweep.search_space.extra", "typ"),
    ("sweep", ["+sweep.search_space.extra={key: train.lr, log: maybe}"], "sweep.search_space.extra", "maybe"),
    ("sweep", ["+sweep.search_space.extra=5"], "sweep.search_space.extra", "5"),
    ("sweep", ["+sweep.search_space.w={key: train.decay_every, type: int, low: 100, high: 400, step: 800}"],
     "sweep.search_space.w.step", "800"),
    ("sweep", ["sweep.sampler=grid", "sweep.grid_points=100000",
               "+sweep.search_space.m={key: train.momentum, type: float, low: 0.1, high: 0.9}"],
     "sweep.grid_points", "100000"),
    # ------------------------------------------------------------- lr-find
    ("lr-find", ["lr_find.lr_max=1e-9"], "lr_find.lr_max", "1e-09"),
    ("lr-find", ["lr_find=sharpness", "train.optimizer=adam"], "train.optimizer", "adam"),
    ("lr-find", ["lr_find=sharpness", "lr_find.widths=[0]"], "lr_find.widths", "[0]"),
    # ------------------------------------------------------------- files and folders
    ("sweep", ["hydra.run.dir=/proc/nope/x"], "hydra.run.dir", "/proc/nope/x"),
    ("sweep", ["data=csv", "data.path=/dev/zero", "data.inputs=[x]", "data.target=y"], "data.path", "/dev/zero"),
    # ------------------------------------------------------------- CSV data (train and sweep alike)
    *((command, [*CSV, *args], key, value) for command in ("train", "sweep") for args, key, value in [
        (["data.path=missing.csv"], "data.path", "missing.csv"),
        (["data.inputs=[a,zz]"], "data.inputs", "zz"),
        (["data.target=label"], "data.target", "label"),
        (["data.inputs=[label]"], "data.inputs", "label"),
        (["data.target=a"], "data.target", "a"),
        (["data.test_fraction=1.5"], "data.test_fraction", "1.5"),
        (["data.path=null"], "data.path", "None"),
        (["data.path=empty.csv"], "data.path", "empty.csv"),
        (["data.path=ragged.csv"], "data.path", "ragged.csv"),
        (["data.path=nan.csv"], "data.inputs", "a"),
        (["data.path=."], "data.path", "."),
        (["data.path=dup.csv"], "data.inputs", "a"),  # two columns named a: which one is a guess
        (["data.path=huge.csv"], "data.path", "huge.csv"),  # too big to read: refused before it is read
    ]),
]


def bad_files(folder) -> None:
    from tests.test_own_data import write_csv

    write_csv(folder / "d.csv")
    (folder / "empty.csv").write_text("")
    (folder / "ragged.csv").write_text("a,b,y\n1,2,3\n1,2\n")
    (folder / "nan.csv").write_text("a,b,y\n1,2,3\nnan,2,3\n4,5,6\n7,8,9\n")
    (folder / "folder.db").mkdir()
    (folder / "dup.csv").write_text("a,b,a,y\n" + "".join(f"{i},{i},{i},{i}\n" for i in range(10)))
    with open(folder / "huge.csv", "w") as fh:  # 1 TiB, sparse: a file no machine here can read into memory
        fh.write("a,b,y\n1,2,3\n")
        fh.truncate(2**40)


@pytest.mark.parametrize("command,args,key,value", BAD_INPUT)
def test_bad_input_is_one_line_naming_key_and_value(tmp_path, monkeypatch, command, args, key, value):
    bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    line = config_error(command, *args)
    assert line.startswith(f"bpexp {command}: error: {key}") and value in line, line
    assert "1,2,3" not in line and "nan,2,3" not in line  # names keys and files, never data


FOUND_AT_START = [  # the real command, in a process of its own (with a bound: retries would take minutes)
    (["train", "train.lr=abc"], "train.lr", "abc"),
    (["sweep", "sweep.storage=notaurl"], "sweep.storage", "notaurl"),
    (["sweep", "sweep.storage=postgresql://u:secret@127.0.0.1:1/db"], "sweep.storage", "postgresql://u:***@"),
    (["train", "tracking.uri=http://127.0.0.1:9"], "tracking.uri", "http://127.0.0.1:9"),
    (["sweep", "tracking.uri=http://u:secret@127.0.0.1:9"], "tracking.uri", "http://u:***@127.0.0.1:9"),
    # a password with a space or a quote: hidden as well, whatever its characters
    (["sweep", "sweep.storage='postgresql://u:my secret@127.0.0.1:1/db'"], "sweep.storage", "postgresql://u:***@"),
    (["train", "tracking.uri='http://u:a \"secret\" x@127.0.0.1:9'"], "tracking.uri", "http://u:***@127.0.0.1:9"),
    (["sweep", "sweep.search_space.hidden.low=0", "sweep.search_space.hidden.log=false"],
     "sweep.search_space.model.hidden", "0"),  # every value a search space can produce must be a valid config
    (["train", *CSV, "data.path=ragged.csv"], "data.path", "ragged.csv"),
    (["sweep", *CSV, "data.path=ragged.csv"], "data.path", "ragged.csv"),
    (["lr-find", "lr_find.lr_max=1e-9"], "lr_find.lr_max", "1e-09"),
    (["train", "tracking.uri=ftp://host/x"], "tracking.uri", "ftp://host/x"),  # refused before any MLflow call
    (["train", "tracking.uri=sqlite:///folder.db"], "tracking.uri", "is a folder, not a sqlite database file"),
    (["sweep", "sweep.storage=sqlite:///folder.db"], "sweep.storage", "is a folder, not a sqlite database file"),
    (["train", "-m", "train.lr=0.1,0.2", "hydra.sweep.dir=/proc"], "hydra.sweep.dir", "/proc"),  # root may write there
]


@pytest.mark.parametrize("args,key,value", FOUND_AT_START)
def test_bad_input_fails_fast_and_leaves_nothing(tmp_path, args, key, value):
    bad_files(tmp_path)
    r = run_bpexp(*args, cwd=tmp_path, timeout=60, process=True)
    assert_clean_failure(r, tmp_path, key, value, secret="secret")


@pytest.mark.parametrize("args,key", [
    (["train", "model.hidden=[100000,100000]"], "model.hidden"),
    (["lr-find", "model.hidden=[100000,100000]"], "model.hidden"),
    (["sweep", "~sweep.search_space.hidden",
      "+sweep.search_space.shape={key: model.hidden, type: categorical, choices: [4, [100000, 100000]]}"],
     "sweep.search_space.shape"),
])
def test_a_network_too_big_for_this_machine_is_refused_before_allocating(tmp_path, args, key):
    """1e10 parameters (480 GB to train): refused by the estimate (training/budget.py), not by the
    allocator or the OOM killer, and nothing recorded."""
    r = run_bpexp(*args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"error: {key}=" in r.stderr and "GiB to train" in r.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists() and not (tmp_path / "outputs" / "optuna.db").exists()


def test_a_storage_that_cannot_be_opened_is_found_before_the_sweep_imports_anything(tmp_path):
    """The sweep's storage is checked where the tracking store is (commands/apps.run_checked),
    before the sweep's modules (torch) are imported and while its recorder still imports MLflow:
    a URL that is none (its text never repeated: it may hold a password), a folder where the
    sqlite file would be, a folder that cannot be written, a server that refuses connections.
    A storage that may work is left to Optuna's opening."""
    from bpexp.config.environment import check_storage
    from bpexp.config.schema import ConfigError

    (tmp_path / "folder.db").mkdir()
    closed = free_port()
    refused = {
        "secretive-not-a-url": "not a database URL",
        f"sqlite:///{tmp_path}/folder.db": "is a folder, not a sqlite database file",
        "sqlite:////proc/study.db": "cannot create anything in the folder /proc",
        f"postgresql://u:pw@127.0.0.1:{closed}/db": f"no database server answers at 127.0.0.1:{closed} (Connection refused)",
    }
    for url, reason in refused.items():
        with pytest.raises(ConfigError, match="^sweep.storage=") as e:
            check_storage(url)
        line = str(e.value).split("=", 1)[1].split(": ", 1)[1]  # the reason, after the key and value
        assert reason in line and "pw" not in line and "secretive" not in line, line
    check_storage(f"sqlite:///{tmp_path}/new/study.db")  # a new file in a folder that can be made
    for socket_url in ("postgresql://u@/db?host=/var/run/postgresql", f"postgresql://u@127.0.0.1:{closed}/db?host=/tmp",
                       f"mysql://u@127.0.0.1:{closed}/db?unix_socket=/tmp/mysql.sock&charset=utf8mb4"):
        check_storage(socket_url)  # the driver connects to a unix socket: left to the real opening
