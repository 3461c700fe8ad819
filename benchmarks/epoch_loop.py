"""The sequential start's batches (issue 27, goal 3): the compiled epoch loop against the tensor
program, side by side in one run, and what the compiled loop costs to build and load.

A default study trains its first 32 trials 4 at a time, each batch told before the next is
asked: 4 trials x 3 seeds = 12 networks x 5000 epochs, with the study's test losses (every
50 epochs), sharpness (every 500) and pruning reports (every 250). The batches here are drawn
as its random start draws them (hidden log-uniform in 1..32, lr log-uniform in [0.02, 0.6]),
8 batches, seeded. Each batch is trained by both programs, alternated, --repeats times; the
median per batch and over batches is printed.

Then two larger populations, once each per program: a re-check's (5 configs x 35 seeds, no
sharpness) and a later batch's (32 trials x 3 seeds, widths as above, with sharpness).
Then, in fresh processes: numba's import, the compiled loops' first build (training and sharpness) (an empty
NUMBA_CACHE_DIR, as on a first run after install) and its load from the cache (every run after).

Usage: python benchmarks/epoch_loop.py [--repeats 3] [--batches 8]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from bpexp.training import compiled_epochs
from bpexp.training.data import make_dataset
from bpexp.training.population import Member, TrainSpec, train_population

COVERS = compiled_epochs.covers
DATA = make_dataset("sin", -5, 5, 20)
SPEC = TrainSpec(5000, sharpness_every=0)  # a study's: test loss every 50 epochs, sharpness every 500


def batches(n: int) -> list[list[Member]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        trials = [(int(round(np.exp(rng.uniform(0, np.log(32))))), float(np.exp(rng.uniform(np.log(0.02), np.log(0.6)))))
                  for _ in range(4)]
        out.append([Member(h, "tanh", lr, seed) for h, lr in trials for seed in (0, 1, 2)])
    return out


def timed(members: list[Member], compiled: bool, spec: TrainSpec = SPEC) -> float:
    compiled_epochs.covers = COVERS if compiled else (lambda *a: False)
    t = time.perf_counter()
    train_population(members, DATA, spec, report_every=250, on_report=lambda epoch, live, losses: [])
    return time.perf_counter() - t


FIRST_CALL = ("import time; t = time.perf_counter(); import numba; t1 = time.perf_counter(); "
              "from bpexp.training.population import Member, TrainSpec, train_population; "
              "from bpexp.training.data import make_dataset; d = make_dataset('sin', -5, 5, 20); t2 = time.perf_counter(); "
              "train_population([Member(4, 'tanh', 0.01, 99)], d, TrainSpec(1, sharpness_every=0)); t3 = time.perf_counter(); "
              "print(t1 - t, t3 - t2)")


def first_call(cache: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], env={**os.environ, "NUMBA_CACHE_DIR": cache},
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", type=int, default=8)
    a = p.parse_args()
    work = batches(a.batches)
    timed(work[0][:1], True), timed(work[0][:1], False)  # build or load the compiled loop, script the tensor one
    print(f"{'batch':<6} {'widths':<16} {'tensor program s':>17} {'compiled loop s':>16} {'speed-up':>9}")
    tensor_all, compiled_all = [], []
    for i, members in enumerate(work):
        t_tensor, t_compiled = [], []
        for _ in range(a.repeats):
            t_tensor.append(timed(members, False))
            t_compiled.append(timed(members, True))
        t, c = statistics.median(t_tensor), statistics.median(t_compiled)
        tensor_all.append(t), compiled_all.append(c)
        widths = ",".join(str(m.hidden) for m in members[::3])
        print(f"{i:<6} {widths:<16} {t:>17.3f} {c:>16.3f} {t / c:>8.1f}x")
    t, c = statistics.median(tensor_all), statistics.median(compiled_all)
    print(f"{'median':<23} {t:>17.3f} {c:>16.3f} {t / c:>8.1f}x")
    recheck = [Member(w, "tanh", lr, s) for w, lr in [(3, .3), (4, .27), (5, .24), (9, .15), (15, .1)] for s in range(35)]
    wide = [m for members in batches(8) for m in members]
    for name, members, spec in [("re-check, 175 networks", recheck, TrainSpec(5000, sharpness_every=-1)),
                                ("32 trials x 3 seeds", wide, SPEC)]:
        t_tensor, t_compiled = timed(members, False, spec), timed(members, True, spec)
        print(f"{name:<23} {t_tensor:>17.3f} {t_compiled:>16.3f} {t_tensor / t_compiled:>8.1f}x")
    with tempfile.TemporaryDirectory() as cache:
        imp, build = first_call(cache)
        _, load = first_call(cache)
    print(f"numba import {imp:.2f} s; the compiled loop's first build {build:.2f} s (once per install), "
          f"its load from the cache {load:.2f} s (every process that trains)")


if __name__ == "__main__":
    main()
