"""What measuring sharpness costs the population trainer, against training alone.

The default study's population: 100 trials x 3 seeds, widths 1-32 and lrs log-uniform over
the default search space, tanh, 5000 epochs. Trained without sharpness (train.sharpness_every
= -1), with the default (0: every epochs // 10 epochs, at least 200), and measured every 250 and
every 100 epochs; the settings alternate over `--repeats` rounds so drift hits each alike.

    python benchmarks/sharpness_cost.py [--members 300] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bpexp.training.data import make_dataset
from bpexp.training.population import Member, TrainSpec, train_population


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=300)
    p.add_argument("--epochs", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    members = [Member(int(rng.integers(1, 33)), "tanh", float(10 ** rng.uniform(-4, 0)), 99 + i % 3)
               for i in range(a.members)]
    data = make_dataset("sin", -5, 5, 20)
    settings = {-1: "never", 0: "default", 250: "every 250 epochs", 100: "every 100 epochs"}
    times: dict[int, list[float]] = {k: [] for k in settings}
    for _ in range(a.repeats):
        for every in settings:
            t0 = time.perf_counter()
            train_population(members, data, TrainSpec(a.epochs, sharpness_every=every))
            times[every].append(time.perf_counter() - t0)
    base = statistics.median(times[-1])
    print(f"{a.members} networks x {a.epochs} epochs, median of {a.repeats}:")
    for every, label in settings.items():
        t = statistics.median(times[every])
        print(f"  sharpness {label:<20} {t:6.2f} s  {100 * (t / base - 1):+5.1f} %")


if __name__ == "__main__":
    main()
