"""launcher=kubernetes: the workers as one Indexed Job, written as a manifest and applied with
kubectl when it is on PATH (else printed for `kubectl apply -f`).

The database password never enters the manifest: each pod reads it from a Secret
(launcher.secret, key "password") into $PGPASSWORD, which PostgreSQL's client reads. The
pod failure policy maps bpexp's exit statuses: 2 (bad input, the same in every pod) fails the
Job; 130/143 (a signal: node drain, preemption) and a disruption are not counted, and the
replacement pod resumes the study; any other failure (1: a server that stopped answering)
counts towards backoffLimit.
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Any

import yaml

from bpexp.config.schema import LauncherConfig
from bpexp.launchers.workers import LaunchError, Workers, WorkerSpec, first_line
from bpexp.runtime.redaction import redact

CALL_S = 60.0  # the longest a kubectl call may take
PROGRAM = ["bpexp"]  # the image's entry point


def manifest(cfg: LauncherConfig, spec: WorkerSpec, n: int) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())  # none with a secret
                                 if k not in spec.passwords and "PASSWORD" not in k and redact(v) == v]
    if "PGPASSWORD" in spec.passwords or "PGPASSWORD" in spec.env:
        env.append({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": cfg.secret, "key": "password"}}})
    if "MLFLOW_TRACKING_PASSWORD" in spec.passwords or "MLFLOW_TRACKING_PASSWORD" in spec.env:
        env.append({"name": "MLFLOW_TRACKING_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": cfg.secret, "key": "mlflow-password"}}})
    env.append({"name": "BPEXP_WORKER_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}})
    metadata: dict[str, Any] = {"name": spec.name, "labels": {"app.kubernetes.io/name": "bpexp"}}
    if cfg.namespace:
        metadata["namespace"] = cfg.namespace
    on_codes = lambda action, codes: {"action": action, "onExitCodes": {  # noqa: E731
        "containerName": "worker", "operator": "In", "values": codes}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": n,
            "parallelism": n,
            "backoffLimit": 2 * n,
            "podFailurePolicy": {"rules": [
                on_codes("FailJob", [2]),  # bad input: every pod would refuse it the same way
                on_codes("Ignore", [130, 143]),  # stopped by a signal: the new pod resumes
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},  # preempted, evicted
            ]},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "bpexp"}},
                "spec": {
                    "restartPolicy": "Never",  # what a pod failure policy requires
                    "containers": [{
                        "name": "worker",
                        "image": cfg.image,
                        "command": spec.command(PROGRAM),
                        "env": env,
                        "resources": {"requests": {"cpu": str(spec.cpus)}},
                    }],
                },
            },
        },
    }


def _kubectl(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=CALL_S)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"kubectl did not answer in {CALL_S:.0f} s") from None


def write(cfg: LauncherConfig, spec: WorkerSpec, n: int):
    spec.logs.mkdir(parents=True, exist_ok=True)
    path = spec.logs / "job.yaml"
    path.write_text(yaml.safe_dump(manifest(cfg, spec, n), sort_keys=False))
    return path


def can_apply(cfg: LauncherConfig) -> bool:
    return cfg.apply and shutil.which("kubectl") is not None


class KubernetesWorkers(Workers):
    def __init__(self, cfg: LauncherConfig, spec: WorkerSpec, n: int):
        path = write(cfg, spec, n)
        self.n, self.name = n, spec.name
        self.namespace = ["--namespace", cfg.namespace] if cfg.namespace else []
        r = _kubectl("apply", "-f", str(path), *self.namespace)
        if r.returncode != 0:
            raise LaunchError(f"kubectl apply refused {path}: {first_line(r.stderr)}")
        self.where = f"Kubernetes Job {spec.name} ({n} pods; manifest: {path}; logs: kubectl logs job/{spec.name})"

    def _conditions(self) -> str:
        r = _kubectl("get", "job", self.name, *self.namespace, "-o", "jsonpath={.status.conditions[*].type}")
        if r.returncode != 0:
            raise LaunchError(f"kubectl get job {self.name}: {first_line(r.stderr)}")
        return r.stdout

    def running(self) -> bool:
        conditions = self._conditions().split()
        return not ({"Complete", "Failed"} & set(conditions))

    def failures(self) -> list[str]:
        return [f"job {self.name}: failed"] if "Failed" in self._conditions().split() else []

    def cancel(self) -> None:
        _kubectl("delete", "job", self.name, *self.namespace, "--wait=false")
