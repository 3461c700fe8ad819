"""The regression data: y = fn(x) on an even grid, as in the seed (sin on 20 points of [-5, 5]),
or the columns of a CSV file (data.source=csv: one or more inputs, a seeded train/test split).

Training points: `n_points` evenly spaced on [x_min, x_max] (the seed's `linspace`), with
optional Gaussian noise drawn from its own seed. Test points: a dense noise-free grid of
`n_test` points on the same interval, so the test loss measures how well the network
learned the function between the training points, not only at them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

# Target functions. sin/cos are the seed's periodic case; the rest are not periodic.
FUNCTIONS = {
    "sin": torch.sin,
    "cos": torch.cos,
    "gauss": lambda x: torch.exp(-0.5 * x * x),  # a bump: smooth, not periodic
    "abs": torch.abs,  # a kink at 0: hard for smooth activations
    "cubic": lambda x: x**3 / 25.0,  # unbounded polynomial, scaled to about [-5, 5] on the default range
}


@dataclass(frozen=True)
class Dataset:
    x: torch.Tensor  # [n_points] training inputs (the seed's one input), or [n_points, D]
    y: torch.Tensor  # [n_points] training targets (noisy if noise > 0)
    x_test: torch.Tensor  # [n_test] dense grid, or [n_test, D] held-out rows
    y_test: torch.Tensor  # [n_test] noise-free truth
    sha256: Optional[str] = None  # read from a file: the SHA-256 of that file, as read

    def to(self, device: str | torch.device) -> "Dataset":
        return Dataset(*(t.to(device) for t in (self.x, self.y, self.x_test, self.y_test)), self.sha256)


def make_dataset(fn: str, x_min: float, x_max: float, n_points: int, noise: float = 0.0,
                 noise_seed: int = 0, n_test: int = 200) -> Dataset:
    f = FUNCTIONS[fn]
    x = torch.linspace(x_min, x_max, n_points)
    y = f(x)
    if noise > 0:
        g = torch.Generator().manual_seed(noise_seed)
        y = y + noise * torch.randn(n_points, generator=g)
    x_test = torch.linspace(x_min, x_max, n_test)
    return Dataset(x, y, x_test, f(x_test))


def csv_dataset(path: str, inputs: list[str], target: str, test_fraction: float, split_seed: int) -> Dataset:
    """A CSV file's rows, split at random (seeded) into training and test rows; each side keeps
    the file's order. One input gives x as [N] (so the fit figure can draw y over x)."""
    from bpexp.training.csv_data import file_sha256, read_columns

    sha256 = file_sha256(path)
    xs, ys = read_columns(path, inputs, target)
    x, y = torch.tensor(xs, dtype=torch.float32), torch.tensor(ys, dtype=torch.float32)
    n = len(y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_test = round(n * test_fraction)
    test, train = order[:n_test].sort().values, order[n_test:].sort().values
    if x.shape[1] == 1:
        x = x[:, 0]
    return Dataset(x[train], y[train], x[test], y[test], sha256)


def constant_loss(data: Dataset, metric: str) -> float:
    """The loss of a network that learned nothing: the MSE of predicting the training targets'
    mean everywhere, on the training points (train_loss) or the test points (test_loss). The
    not-fit verdict (bpexp/results/outcome.py) is measured against it. The seed's sin data: 0.544."""
    mean = data.y.double().mean()
    y = data.y if metric == "train_loss" else data.y_test
    return float(((y.double() - mean) ** 2).mean())


def dataset_from_config(data) -> Dataset:
    """Build the dataset a `data` config group describes."""
    if data.source == "csv":
        return csv_dataset(data.path, list(data.inputs), data.target, data.test_fraction, data.split_seed)
    return make_dataset(data.fn, data.x_min, data.x_max, data.n_points, data.noise, data.noise_seed, data.n_test)
