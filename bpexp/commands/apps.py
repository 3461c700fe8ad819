"""The Hydra apps behind `bpexp train`, `bpexp sweep` and `bpexp lr-find`.

The apps are thin: they check the composed config and hand it to a plain function.
Before handing over to Hydra, `precheck` composes the config once with the same overrides,
so a typo'd key, a wrong type or an out-of-range value ends in one line that names the key
and value (Hydra's own report spans several lines), with exit status 2 and nothing run.
"""
from __future__ import annotations

import itertools
import sys
from typing import Callable

import hydra
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from bpexp.runtime import failures
from bpexp.recording import recorder
from bpexp.runtime import redaction
from bpexp.runtime.failpoints import failpoint
from bpexp.runtime import interrupts
from bpexp.runtime.interrupts import ServerStopped, Terminated
from bpexp.runtime.stores import StoreError
from bpexp.config.environment import check_storage, check_tracking_uri
from bpexp.config.schema import ConfigError, register_schemas
from bpexp.config.validation import absolute_paths, validate_lr_find, validate_sweep, validate_train

CONF = "bpexp.conf"
register_schemas()


def fail(command: str, message: str) -> None:
    failpoint("failing")
    interrupts.release()  # a signal held meanwhile wins: one line, "interrupted" or "terminated"
    recorder.abandon()  # nothing will be recorded: don't wait for the recorder to start
    print(f"bpexp {command}: error: {redaction.redact(message)}", file=sys.stderr)
    sys.exit(2)


def checked(cfg: DictConfig, validate: Callable, command: str):
    """The composed config as schema objects, or a one-line error and exit 2."""
    try:
        obj = OmegaConf.to_object(cfg)
        redaction.remember(obj.tracking.uri, getattr(getattr(obj, "sweep", None), "storage", None))
        unknown_keys(cfg, obj)
        validate(obj)
        absolute_paths(obj)
    except ConfigError as e:
        fail(command, str(e))
    return obj


def unknown_keys(cfg: DictConfig, obj) -> None:
    """A key the schema lacks is an error, also when added with `+` (+model.hiden=8): OmegaConf
    lets `+` add it to the composed config, and turning that into schema objects drops it."""
    from bpexp.recording.tracking import flatten

    given = flatten(OmegaConf.to_container(cfg))
    known = flatten(OmegaConf.to_container(OmegaConf.structured(obj)))
    for key in sorted(set(given) - set(known)):
        raise ConfigError(key, given[key], "is not a key of the config (see --help)")


def run_checked(command: str, load: Callable[[], Callable], cfg, before: Callable = lambda cfg: None) -> float:
    """Run the command (`load()` imports it) on the checked tracking URI, with this job's
    overrides (what its runs record as the command line). The tracking store and the command's
    own checks (`before`) run before the import: the command's modules import torch (1.4 s),
    and a store that cannot be used is said without waiting.
    Whatever ends it early is one line: a ConfigError found only at run time (no CUDA, a store
    that cannot be opened) exits 2; Ctrl-C 130, SIGTERM 143 (what was running is marked
    failed / KILLED by then); any other failure 1 (bpexp/runtime/failures.py)."""
    from hydra.core.hydra_config import HydraConfig

    interrupts.release()  # a signal held while Hydra composed acts here, before anything runs
    hc = HydraConfig.get()
    redact_multirun_record(hc)
    from hydra.types import RunMode

    if hc.mode == RunMode.MULTIRUN:
        recorder.keep_between_jobs()
    try:
        uri = check_tracking_uri(cfg.tracking.uri)
        before(cfg)
        return imported(load)(cfg, uri, list(hc.overrides.task))
    except (ConfigError, StoreError) as e:
        fail(command, str(e))
    except ServerStopped as e:  # a watch found the database stopped: a failure, not a signal
        print(f"bpexp {command}: error: {e}; run the same command again to resume", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"bpexp {command}: {what}; run the same command again to resume", file=sys.stderr)
        sys.exit(143 if isinstance(e, Terminated) else 130)
    except Exception as e:
        sys.exit(failures.report(command, e))


def redact_multirun_record(hc) -> None:
    """A -m multirun's files (multirun.yaml, written before the first job, and each job's
    .hydra/) hold the command line's overrides: hide the passwords of URLs in them, as
    everywhere else. A single run writes no such files (conf/hydra/output/bpexp.yaml)."""
    from hydra.types import RunMode

    if hc.mode != RunMode.MULTIRUN:
        return
    from pathlib import Path

    from bpexp.runtime.redaction import redact

    files = [Path(hc.sweep.dir) / "multirun.yaml", *Path(hc.runtime.output_dir).glob(".hydra/*.yaml")]
    for path in files:
        try:
            text = path.read_text()
            if redact(text) != text:
                path.write_text(redact(text))
        except OSError:
            pass


@hydra.main(version_base="1.3", config_path="pkg://bpexp.conf", config_name="train")
def train_app(cfg: DictConfig) -> float:
    def load():  # its modules import torch: after run_checked's check of the store
        from bpexp.commands.train import train
        return train

    return run_checked("train", load, checked(cfg, validate_train, "train"))


@hydra.main(version_base="1.3", config_path="pkg://bpexp.conf", config_name="sweep")
def sweep_app(cfg: DictConfig) -> float:
    def load():  # its modules import torch: after run_checked's check of the store
        from bpexp.commands.sweep import sweep
        return sweep

    return run_checked("sweep", load, checked(cfg, validate_sweep, "sweep"), before=sweep_checks)


def sweep_checks(cfg) -> None:
    """What a sweep checks before its modules import torch (the sweep checks them again when
    called as a function): every value its search space can produce, its Optuna storage."""
    from bpexp.study.search_space import check_search_space

    check_search_space(cfg)
    check_storage(cfg.sweep.storage)


@hydra.main(version_base="1.3", config_path="pkg://bpexp.conf", config_name="lr-find")
def lr_find_app(cfg: DictConfig) -> float:
    def load():  # its modules import torch: after run_checked's check of the store
        from bpexp.commands.lr_find import lr_find
        return lr_find

    return run_checked("lr-find", load, checked(cfg, validate_lr_find, "lr-find"))


# command -> (Hydra app, validation, config name)
COMMANDS = {"train": (train_app, validate_train, "train"), "sweep": (sweep_app, validate_sweep, "sweep"),
            "lr-find": (lr_find_app, validate_lr_find, "lr-find")}
# With these, Hydra reads configs precheck can't see.
OTHER_CONFIGS = {"--config-dir", "-cd"}
# Hydra's flags that take a value (hydra/_internal/utils.py: get_args_parser), and --info's
# optional one: the value is the next argument.
VALUE_FLAGS = {"--config-name", "-cn", "--config-path", "-cp", "--package", "-p", "--cfg", "-c",
               "--config-dir", "-cd", "--experimental-rerun"}
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
# Flags after which the config is printed, not run: checked as a run is (one line on a bad key).
PRINTS_CONFIG = {"--cfg", "-c", "--resolve"}


def _first_line(e: BaseException) -> str:
    while e.__cause__ is not None and not str(e).strip():
        e = e.__cause__
    cause = e.__cause__
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if cause is not None and str(cause).strip():
        text += " " + str(cause).strip().splitlines()[0]
    return text


def imported(load: Callable[[], Callable]) -> Callable:
    """load(), with Ctrl-C and SIGTERM held until it returns, then acted on (one line). The
    command's modules import torch, whose C++ start-up calls back into Python: a KeyboardInterrupt
    raised inside such a callback is thrown through C++ code that cannot pass it on, and the
    process aborted (pybind11's error_already_set, SIGABRT, the resource tracker's warnings), 2 of
    ~60 signals landing in the import in benchmarks/signals_at_any_moment.py. Held, a signal
    waits for the import (~1.4 s)."""
    interrupts.hold()
    try:
        return load()
    finally:
        interrupts.release()


def run(command: str, args: list[str], info: bool) -> None:
    """`bpexp COMMAND ARGS`: check the config, then hand over to the command's Hydra app.
    info: a flag asks Hydra to print something (--help, --cfg, ...) instead of running; the
    config it prints (--cfg) is checked as a run's is."""
    overrides, flags = split_flags(args)
    interrupts.hold()  # until the command's own handling begins (run_checked), or Hydra is done
    try:
        _compose_and_run(command, args, info, overrides, flags)
    finally:
        interrupts.release()


def _compose_and_run(command: str, args: list[str], info: bool, overrides: list[str], flags: list[str]) -> None:
    if not info or PRINTS_CONFIG & set(flags):
        precheck(command, args)
    if not any(a.lstrip("+~").startswith("hydra.output_subdir=") for a in overrides):
        # No .hydra/ folder of Hydra's own: the config is recorded (secrets redacted) in MLflow,
        # and a copy there would keep any password given on the command line. (Hydra's own
        # hydra config sets output_subdir after config groups such as hydra/output are merged,
        # so only an override reaches it.)
        overrides = [*overrides, "hydra.output_subdir=null"]
    # Overrides first, then flags: Hydra's parser takes the overrides as one run of positional
    # arguments, so `a=1 --cfg job b=2` would leave b=2 "unrecognized"; bpexp takes flags anywhere.
    sys.argv = [f"bpexp {command}", *overrides, *flags]  # Hydra reads its command line from sys.argv
    COMMANDS[command][0]()


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(overrides, flags with their values), each in the order given."""
    overrides, flags, value_next = [], [], False
    for a in args:
        if value_next:
            flags.append(a)
            value_next = False
        elif a in VALUE_FLAGS:
            flags.append(a)
            value_next = True
        elif a.startswith("-"):
            flags.append(a)
        elif flags and flags[-1] in ("--info", "-i") and a in INFO_TOPICS:
            flags.append(a)
        else:
            overrides.append(a)
    return overrides, flags


def precheck(command: str, args: list[str]) -> None:
    """Compose and validate the config for these overrides: for a -m multirun, every job
    Hydra will run (the product of the swept values)."""
    if any(a.split("=")[0] in OTHER_CONFIGS for a in args):
        return
    config_name, overrides = config_and_overrides(command, args)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # Hydra's message starts with its lexer's class name: say what to do instead
        bad = next((o for o in overrides if not _parses(o)), None)
        fail(command, f"{bad}: not a Hydra override as written: quote a value that holds quotes, brackets, "
                      "non-ASCII letters or other special characters (in the shell: 'key=\"value\"')" if bad else _first_line(e))
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed if o.is_sweep_override()]
    with initialize_config_module(CONF, version_base="1.3"):
        for job in itertools.product(*swept):
            failpoint("composing")
            checked(compose_or_fail(command, config_name, base + list(job)), COMMANDS[command][1], command)


def _parses(override: str) -> bool:
    try:
        OverridesParser.create().parse_overrides([override])
    except Exception:
        return False
    return True


def config_and_overrides(command: str, args: list[str]) -> tuple[str, list[str]]:
    """The config name (--config-name) and the config overrides among the command line's
    arguments; Hydra's own settings are left to Hydra, but an output folder is checked."""
    overrides, flags = split_flags(args)
    config_name = COMMANDS[command][2]
    for flag, value in zip(flags, flags[1:]):
        if flag in ("--config-name", "-cn"):
            config_name = value
    hydra = [a for a in overrides if a.split("=")[0].lstrip("+~").startswith("hydra")]
    for a in hydra:
        check_output_dir(command, a)
    return config_name, [a for a in overrides if a not in hydra]


def compose_or_fail(command: str, config_name: str, overrides: list[str]) -> DictConfig:
    """The composed config, or one line naming the override that breaks it (each composed alone)."""
    try:
        return compose(config_name, overrides=overrides)
    except Exception as e:
        alone = ((o, _composes(config_name, o)) for o in overrides)
        culprit, error = next(((o, err) for o, err in alone if err is not None), (None, e))
        fail(command, (f"{culprit}: " if culprit else "") + _first_line(error))


def check_output_dir(command: str, override: str) -> None:
    """hydra.run.dir / hydra.sweep.dir must be a folder we can write (Hydra's own error is a
    traceback): checked up to its first interpolation (${now:...} is filled in at run time)."""
    from pathlib import Path

    from bpexp.runtime.stores import writable_problem

    key, _, value = override.lstrip("+~").partition("=")
    if key not in ("hydra.run.dir", "hydra.sweep.dir") or not value:
        return
    fixed = value.split("${")[0]
    folder = Path(fixed) if not fixed or fixed.endswith("/") or "${" not in value else Path(fixed).parent
    problem = writable_problem(folder if str(folder) else Path("."))
    if problem:
        fail(command, f"{key}={value!r}: {problem}")


def _composes(config_name: str, override: str):
    """None if the config composes with this override alone, else the exception."""
    try:
        compose(config_name, overrides=[override])
    except Exception as e:
        return e
    return None
