"""Everything a fixed study records, as canonical JSON, to compare two versions of bpexp:

    python tools/study_fingerprint.py OUT.json [overrides ...]     (default: sweep.n_trials=60)
    python tools/study_fingerprint.py --diff A.json B.json

Runs `bpexp sweep` in a new folder with the bpexp on PYTHONPATH, then dumps the Optuna study
(every trial's params, values, state, intermediate values and user attributes; the study's
attributes) and every MLflow run (params, metric histories, tags, artifact hashes), minus what
differs from run to run: ids, times, temporary paths, host:pid. PNGs are compared by size in
KB (matplotlib writes no timestamps, but font rendering may differ between machines).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

VOLATILE = re.compile(r"[0-9a-f]{32}|\d+\.\d+ ?s\b|[\w.-]+:\d+(?:@[\w.]+)?\b|/tmp/\w+|\d{4}-\d\d-\d\d[ T][\d:.]+")
TEXT = (".svg", ".csv", ".json", ".yaml", ".txt", ".md")


def scrub(x):
    if isinstance(x, str):
        return VOLATILE.sub("<v>", x)
    if isinstance(x, dict):
        return {scrub(k): scrub(v) for k, v in x.items()}
    if isinstance(x, list):
        return [scrub(v) for v in x]
    return x


def fingerprint(out: Path, overrides: list[str]) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    work = Path(tempfile.mkdtemp())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    p = subprocess.run([sys.executable, "-m", "bpexp", "sweep", *overrides, "sweep.progress=false"], cwd=work,
                       env=env, capture_output=True, text=True)
    res: dict = {"rc": p.returncode, "stdout": scrub(p.stdout), "stderr": scrub(p.stderr), "studies": {}}
    storage = f"sqlite:///{work}/outputs/optuna.db"
    for name in optuna.get_all_study_names(storage):
        s = optuna.load_study(study_name=name, storage=storage)
        res["studies"][name] = {"attrs": scrub(s.user_attrs), "trials": [
            {"n": t.number, "state": t.state.name, "values": t.values, "params": t.params,
             "attrs": scrub(dict(t.user_attrs)), "inter": t.intermediate_values,
             "dists": {k: str(v) for k, v in t.distributions.items()}} for t in s.trials]}
    client = MlflowClient(f"sqlite:///{work}/outputs/mlflow.db")
    runs = []
    for e in client.search_experiments():
        for r in client.search_runs([e.experiment_id], max_results=5000):
            history = {k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)]
                       for k in r.data.metrics}
            artifacts = {}
            root = Path(r.info.artifact_uri.replace("file://", ""))
            for f in sorted(root.rglob("*")) if root.exists() else []:
                if f.is_file():
                    b = f.read_bytes()
                    if f.suffix in TEXT:
                        b = VOLATILE.sub("<v>", b.decode(errors="replace")).encode()
                    artifacts[str(f.relative_to(root))] = (len(b) // 1000 if f.suffix == ".png"
                                                           else hashlib.sha256(b).hexdigest()[:16])
            tags = {k: v for k, v in r.data.tags.items()
                    if not k.startswith("mlflow.") or k in ("mlflow.runName", "mlflow.note.content")}
            runs.append({"name": r.info.run_name, "status": r.info.status, "params": scrub(r.data.params),
                         "tags": scrub(tags), "metrics": history, "artifacts": artifacts, "exp": e.name})
    res["runs"] = sorted(runs, key=lambda r: (r["exp"], r["name"] or ""))
    out.write_text(json.dumps(res, indent=1, sort_keys=True, default=str))
    print(f"exit {p.returncode}, {len(runs)} runs -> {out} (study in {work})")


def diff(a, b, path: str = "") -> int:
    """Print where two fingerprints differ; return how many places."""
    if type(a) is not type(b):
        print(path, repr(a)[:150], "|", repr(b)[:150])
        return 1
    if isinstance(a, dict):
        n = 0
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                print(f"{path}/{k} only in {'the first' if k in a else 'the second'}")
                n += 1
            else:
                n += diff(a[k], b[k], f"{path}/{k}")
        return n
    if isinstance(a, list):
        if len(a) != len(b):
            print(path, "lengths", len(a), len(b))
            return 1
        return sum(diff(u, v, f"{path}[{i}]") for i, (u, v) in enumerate(zip(a, b)))
    if a != b:
        print(path, repr(a)[:150], "|", repr(b)[:150])
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--diff"]:
        n = diff(*(json.loads(Path(f).read_text()) for f in sys.argv[2:4]))
        print(f"{n} difference(s)")
        sys.exit(1 if n else 0)
    fingerprint(Path(sys.argv[1]).resolve(), sys.argv[2:] or ["sweep.n_trials=60"])
