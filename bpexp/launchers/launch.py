"""Pick the engine: check it before anything starts, then start the workers on it."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Union

from bpexp.config.schema import LauncherConfig, LauncherKind
from bpexp.launchers import kubernetes, local, ray_tasks, slurm
from bpexp.launchers.workers import Workers, WorkerSpec


def prepare(cfg: LauncherConfig) -> None:
    """What the engine needs, checked (and, for Ray, connected) before the study is touched
    (after launchers.workers.check): a launcher that cannot start its workers starts none."""
    if cfg.kind == LauncherKind.slurm:
        slurm.check_slurm()
    elif cfg.kind == LauncherKind.ray:
        ray_tasks.connect(cfg)


def start(cfg: LauncherConfig, spec: WorkerSpec, n: int) -> Union[Workers, Path]:
    """The workers, started; for a Kubernetes Job that this machine does not apply, the
    manifest written for the user to apply."""
    if cfg.kind == LauncherKind.local:
        return local.LocalWorkers(spec, n)
    if cfg.kind == LauncherKind.slurm:
        return slurm.SlurmWorkers(cfg, spec, n)
    if cfg.kind == LauncherKind.ray:
        return ray_tasks.RayWorkers(spec, n)
    if kubernetes.can_apply(cfg):
        return kubernetes.KubernetesWorkers(cfg, spec, n)
    return kubernetes.write(cfg, spec, n)


def stop(cfg: LauncherConfig, workers: Optional[Workers]) -> None:
    """Cancel the workers (each settles, as on SIGTERM); then let go of the engine."""
    try:
        if workers is not None:
            workers.cancel()
    finally:
        ray = sys.modules.get("ray")  # connected by prepare() only when this command started workers
        if cfg.kind == LauncherKind.ray and ray is not None:
            ray.shutdown()
