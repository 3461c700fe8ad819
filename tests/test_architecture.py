"""The layering of docs/architecture.md, as import-linter's contracts in pyproject.toml: a module
imports only from the layers below its own, no command borrows from another, training stays
pure torch and the recorder process never imports torch."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the bpexp package under `root`, with the project's contracts."""
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)


def test_every_layering_contract_is_kept():
    r = lint_imports(ROOT)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout + r.stderr


def test_a_forbidden_import_breaks_the_layering(tmp_path):
    """The contracts bite: the training layer importing the study layer, or Optuna, is refused."""
    shutil.copytree(ROOT / "bpexp", tmp_path / "bpexp", ignore=shutil.ignore_patterns("__pycache__"))
    network = tmp_path / "bpexp" / "training" / "network.py"
    network.write_text(network.read_text() + "\nfrom bpexp.study import search_space  # noqa\n")
    r = lint_imports(tmp_path)
    assert r.returncode != 0, r.stdout
    assert "bpexp.training is not allowed to import bpexp.study" in r.stdout, r.stdout
    assert "bpexp.training is not allowed to import optuna" in r.stdout, r.stdout
