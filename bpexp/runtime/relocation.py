"""A project folder moved (or copied) elsewhere: its local MLflow store made to point at where
its files are now.

MLflow's sqlite store records every artifact location as an absolute path or file URI: each
experiment's, each run's, each logged model's, each registered model version's. After a move
those point into a folder that is gone (the MLflow UI shows no artifacts, a new run of the study
would write its files there), and MLflow has no API to change a run's or an experiment's
artifact location. So the rows are rewritten here, in one sqlite transaction: the old folder's
prefix replaced by the new one's, nothing else touched. Only a store that says it moved
(`moved_from`) or that holds the study's own parent run (study/storage.py) is rewritten.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Optional
from urllib.parse import unquote

from bpexp.runtime import stores

# (table, column) of MLflow's sqlite schema (3.x) holding absolute artifact locations; a column
# that a store's version lacks is skipped.
LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
                    ("model_versions", "source"))


def moved_roots(old_file: Path, new_file: Path) -> Optional[tuple[Path, Path]]:
    """The folder that moved, before and after: the two files' paths less the part they share
    at the end (/a/proj/outputs/mlflow.db, /b/p2/outputs/mlflow.db -> /a/proj, /b/p2). None if
    the two paths differ in their file name (not a move of a folder around the store)."""
    old, new = list(old_file.parts), list(new_file.parts)
    if not old or not new or old[-1] != new[-1]:
        return None
    while len(old) > 1 and len(new) > 1 and old[-1] == new[-1]:
        old.pop()
        new.pop()
    return Path(*old), Path(*new)


def moved_from(db: Path) -> Optional[tuple[Path, Path]]:
    """(old folder, new folder) if the MLflow sqlite store `db` was moved: bpexp keeps a local
    store's artifacts beside it (<folder>/mlartifacts), so an experiment whose location is
    <other>/mlartifacts, with no <other>/<db's name> any more, was made where the store was
    before. None when nothing says it moved (a copy whose original is still there included:
    only a study's parent run tells that copy apart, study/storage.py)."""
    rows = stores.sqlite_read(db, "SELECT artifact_location FROM experiments")
    here = db.parent.resolve() / "mlartifacts"
    for (location,) in rows or []:
        folder = Path(unquote(location[len("file://"):])) if (location or "").startswith("file:///") else None
        if folder is None or folder.name != "mlartifacts" or folder == here or (folder.parent / db.name).exists():
            continue
        return moved_roots(folder.parent / db.name, db.resolve())
    return None


def relocate(db: Path, old_root: Path, new_root: Path) -> int:
    """Rewrite the artifact locations under old_root to the same places under new_root, as
    plain paths and as file URIs; returns how many rows changed."""
    pairs = [(str(old_root) + "/", str(new_root) + "/"), (old_root.as_uri() + "/", new_root.as_uri() + "/")]
    changed = 0
    con = sqlite3.connect(db, timeout=30)
    try:
        with con:  # one transaction: all rows or none
            for table, column in LOCATION_COLUMNS:
                if column not in {row[1] for row in con.execute(f"PRAGMA table_info({table})")}:
                    continue
                for old, new in pairs:
                    changed += con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                        (new, len(old) + 1, len(old), old)).rowcount
    finally:
        con.close()
    return changed
