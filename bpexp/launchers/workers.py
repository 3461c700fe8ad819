"""What every launcher shares: the workers' command and environment, and the handle on them.

A worker is `bpexp sweep` with the launching command's overrides, less the launcher's, plus
`sweep.end=false` (the launching command ends the study, once, not every worker) and the
storage and tracking URIs it resolved, so that every worker uses exactly the same study and
store. Passwords leave the URLs for the environment ($PGPASSWORD, $MLFLOW_TRACKING_PASSWORD):
a Slurm script or a Kubernetes manifest is a file, and a command line is public on its host.
"""
from __future__ import annotations

import os
import re
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import unquote

from bpexp.config.schema import ConfigError, LauncherConfig, LauncherKind
from bpexp.runtime import stores
from bpexp.runtime.redaction import redact, split_userinfo

# What a worker adds to the launching command's overrides.
WORKER_OVERRIDES = ("sweep.end=false", "sweep.progress=false")
# Environment variables a worker needs from the launching command's (database and MLflow
# credentials, bpexp's own switches); a remote engine gets these, not the whole environment.
PASSED_ENV = ("PG", "MLFLOW_", "BPEXP_DEBUG", "BPEXP_FAILPOINT", "BPEXP_FAULT", "BPEXP_SIGNAL")
# Engines whose workers may run on other machines: they need a database and a tracking server.
REMOTE = (LauncherKind.slurm, LauncherKind.ray, LauncherKind.kubernetes)


class LaunchError(RuntimeError):
    """The engine refused or lost the workers; str() is one line, without secrets."""


@dataclass(frozen=True)
class WorkerSpec:
    """What each worker runs, and where its launcher keeps what it writes."""

    args: list[str]  # after `bpexp`: ["sweep", override, ...]
    env: dict[str, str]  # set in each worker's environment
    cwd: str
    logs: Path  # worker-<i>.log files, the Slurm script, the Kubernetes manifest
    cpus: int
    name: str  # the job's name on the engine: bpexp-<study name>
    passwords: dict[str, str] = field(default_factory=dict)  # env var -> password moved out of a URL

    def command(self, program: Optional[list[str]] = None) -> list[str]:
        return [*(program or [sys.executable, "-m", "bpexp"]), *self.args]


class Workers(ABC):
    """The workers an engine runs for one launch."""

    n: int
    where: str  # one line: where they run and where their logs are

    @abstractmethod
    def running(self) -> bool:
        """Whether any worker still runs (or waits to run)."""

    @abstractmethod
    def failures(self) -> list[str]:
        """The workers that ended badly, one short phrase each ("worker 2: exit 1")."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop them (each settles what it was doing, as on SIGTERM), bounded."""

    def drop_waiting(self) -> None:
        """The study is done: workers still waiting for the engine to start them need not start
        (a requeued Slurm task waits minutes before it runs again)."""


def worker_count(cfg: LauncherConfig) -> int:
    if cfg.workers is not None:
        return cfg.workers
    return max(1, (os.cpu_count() or 2) // 2) if cfg.kind == LauncherKind.local else 4


def check(cfg: LauncherConfig, storage: str, tracking_uri: str) -> None:
    """Refuse, before anything starts, what the engine's workers could not use."""
    if cfg.workers is not None and cfg.workers < 0:
        raise ConfigError("launcher.workers", cfg.workers, "must be >= 0 (0: start none, follow the study)")
    if cfg.cpus_per_worker < 1:
        raise ConfigError("launcher.cpus_per_worker", cfg.cpus_per_worker, "must be >= 1")
    if cfg.kind == LauncherKind.kubernetes and not cfg.image:
        raise ConfigError("launcher.image", cfg.image, "launcher=kubernetes needs the container image "
                          "with bpexp installed (e.g. launcher.image=registry/bpexp:1.0)")
    if cfg.kind == LauncherKind.ray and not cfg.follow:
        raise ConfigError("launcher.follow", False, "Ray ends a driver's tasks when the driver ends: "
                          "launcher=ray follows its workers")
    if cfg.kind not in REMOTE:
        return
    if stores.sqlite_file(storage) is not None or storage.startswith("sqlite"):
        raise ConfigError("sweep.storage", redact(storage), f"launcher={cfg.kind} starts workers that may run on "
                          "other machines: give a database server they all reach (postgresql://...)")
    if not stores.is_tracking_server(tracking_uri):
        raise ConfigError("tracking.uri", redact(tracking_uri), f"launcher={cfg.kind} starts workers that may run on "
                          "other machines: give an MLflow tracking server they all reach (http://...)")
    _, password = without_password(storage)
    if password and not storage.startswith("postgresql"):
        raise ConfigError("sweep.storage", redact(storage), f"launcher={cfg.kind} would write this password into "
                          "the workers' job: give it in the environment the database client reads instead")


def without_password(url: str) -> tuple[str, Optional[str]]:
    """postgresql://u:pw@h/db -> ("postgresql://u@h/db", "pw"); a URL without one unchanged."""
    if "://" not in url:
        return url, None
    scheme, rest = url.split("://", 1)
    userinfo, rest = split_userinfo(rest)
    if ":" not in userinfo:
        return url, None
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{user}{rest}", unquote(password)


def worker_spec(cfg: LauncherConfig, args: list[str], study_name: str, storage: str, tracking_uri: str) -> WorkerSpec:
    """The workers' command: the launching command's overrides less the launcher's, with the
    resolved storage and tracking URIs, passwords moved to the environment."""
    bare_storage, db_password = without_password(storage)
    bare_tracking, user, tracking_password = stores.split_credentials(tracking_uri)
    passwords = {}
    if db_password is not None and storage.startswith("postgresql"):
        passwords["PGPASSWORD"] = db_password  # libpq's own variable: psycopg reads it
        storage = bare_storage
    if tracking_password is not None:
        passwords["MLFLOW_TRACKING_PASSWORD"] = tracking_password
    overridden = ("launcher", "sweep.storage", "tracking.uri", *(o.split("=")[0] for o in WORKER_OVERRIDES))
    kept = [a for a in args if _key(a) not in overridden and not _key(a).startswith("launcher.")]
    worker_args = ["sweep", *kept, _override("sweep.storage", storage),
                   _override("tracking.uri", bare_tracking), *WORKER_OVERRIDES]
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV)}
    env.pop("MLFLOW_TRACKING_URI", None)  # the workers are given the resolved one
    if user is not None:
        env["MLFLOW_TRACKING_USERNAME"] = user
    env.update(passwords, OMP_NUM_THREADS=str(cfg.cpus_per_worker))
    logs = Path(os.getcwd()) / "outputs" / "launch" / study_name
    return WorkerSpec(worker_args, env, os.getcwd(), logs, cfg.cpus_per_worker,
                      "bpexp-" + re.sub(r"[^a-z0-9-]+", "-", study_name.lower()).strip("-"), passwords)


def follow_command(args: list[str]) -> str:
    """The command that follows (and ends) a study launched with `args`, starting no workers;
    without the passwords of its URLs (the user gives them as the workers get them)."""
    kept = [_override(_key(a), without_password(a.split("=", 1)[1])[0]) if _key(a) in ("sweep.storage", "tracking.uri")
            else a for a in args if _key(a) not in ("launcher.workers", "launcher.follow")]
    return redact(" ".join(["bpexp", "sweep", *kept, "launcher.workers=0"]))  # a password given some other way


def first_line(text: str) -> str:
    """The first non-blank line of an engine tool's stderr, for a one-line error."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no reason given"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _override(key: str, value: str) -> str:
    """key=value as Hydra parses it back: quoted unless plainly safe."""
    if re.fullmatch(r"[\w\-+./:@%]+", value):
        return f"{key}={value}"
    return f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
