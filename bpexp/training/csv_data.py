"""Reading a CSV file's columns for `data.source=csv`, strictly, without torch or pandas.

Kept apart from data.py so checking a config (which reads the file, to name a missing column
or a bad value before anything runs) doesn't import torch. The first row names the columns;
every named column must hold a finite number in every row.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import math
import os
import stat

MAX_RECORDED_BYTES = 50 * 2**20  # larger files are recorded by their hash only


class ColumnError(ValueError):
    """A bad value in a named column; .column says which."""

    def __init__(self, column: str, message: str):
        self.column = column
        super().__init__(message)


def read_columns(path: str, inputs: list[str], target: str) -> tuple[list[list[float]], list[float]]:
    """(rows of the input columns, the target column). Raises FileNotFoundError, KeyError(name,
    the header's columns) for a column the header lacks, ValueError for anything else wrong.

    A run reads its file three times (checking the overrides, checking the composed config,
    building the dataset): the parse is kept for the same file, unchanged since (its size and
    modification time), and the same columns. Callers must not modify what it returns."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block forever, /dev/zero never end
        raise ValueError("is not a regular file (a pipe or a device?)")
    return _read_columns(path, tuple(inputs), target, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _read_columns(path: str, inputs: tuple[str, ...], target: str, mtime_ns: int, size: int):
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise ValueError("is not a UTF-8 text file") from None
    except csv.Error as e:
        raise ValueError(f"is not a readable CSV file ({e})") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise ValueError("is empty (expected a header row naming the columns)")
    header = [cell.strip() for cell in rows[0]]
    where = {}
    for name in [*inputs, target]:
        if name not in header:
            raise KeyError(name, column_names(header))
        if header.count(name) > 1:  # which one would be read is a guess: refuse it
            raise ColumnError(name, f"is named by {header.count(name)} columns of the header")
        where[name] = header.index(name)
    xs, ys = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue  # a blank line (often the last)
        if len(row) != len(header):
            raise ValueError(f"line {line} has {len(row)} fields, the header has {len(header)}")
        values = {}
        for name, col in where.items():
            try:
                v = float(row[col])
            except ValueError:
                raise ColumnError(name, f"line {line} of {path}: not a number") from None
            if not math.isfinite(v):
                raise ColumnError(name, f"line {line} of {path}: not a finite number")
            values[name] = v
        xs.append([values[name] for name in inputs])
        ys.append(values[target])
    if not ys:
        raise ValueError("has a header but no data rows")
    return xs, ys


def column_names(header: list[str]) -> str:
    """What an error says of a header that lacks a column: how many columns it has, never
    their text. A file that is not a CSV (a symlink to a one-line secret, a token file) has a
    first line that reads like a header and is data; no look of a name tells them apart."""
    return f"its header has {len(header)} column(s), none of them this one"


def file_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def file_copy(path: str) -> dict[str, bytes]:
    """The file as artifact data/<name>, so a run reproduces without the original (recorded
    once per run, or once per sweep on its parent); a file over the limit only by its hash."""
    if os.path.getsize(path) > MAX_RECORDED_BYTES:
        return {}
    with open(path, "rb") as fh:
        return {f"data/{os.path.basename(path)}": fh.read()}
