"""The epochs at which training measures more than the train loss: the test loss (and the
points of a run's metric curves), and the sharpness of the loss Hessian. Shared by the
population's trainer and by what reads its results."""
from __future__ import annotations

import numpy as np


def log_epochs(epochs: int, log_every: int) -> np.ndarray:
    """Epochs at which test losses (and metric points) are taken: every log_every, and the last.
    Automatic (0): epochs // 100, so a curve has 100 points (101 with the last epoch): one
    every 50 epochs of 5000, ~5 pixels apart in an MLflow chart (which draws up to 320 points a
    curve). 200 points doubled the store (docs/findings.md, "Bytes per trial"): set
    train.log_every for more."""
    every = log_every or max(1, epochs // 100)
    return np.unique(np.append(np.arange(0, epochs, every), epochs - 1))


MIN_SHARPNESS_EVERY = 200


def sharpness_epochs(epochs: int, every: int) -> np.ndarray:
    """Epochs at which sharpness is measured: 0 (the initial network), every `every`, and the
    last; none for every < 0. Automatic (0): every epochs // 10 epochs, at least MIN_SHARPNESS_EVERY
    apart: 11 points in 5000 epochs (0, 500, ..., 4500, 4999), 6 in 1000, the first and the last in under 200. One
    measurement costs about 18 training epochs of the same population (a cold start at epoch
    0 more): benchmarks/sharpness_cost.py, +8 % at 5000 epochs, +23 % at 1000 with 12 points."""
    if every < 0:
        return np.zeros(0, dtype=int)
    every = every or max(MIN_SHARPNESS_EVERY, epochs // 10)
    return np.unique(np.append(np.arange(0, epochs, every), epochs - 1))
