"""How the weights move: learning-rate schedules and optimizers, for a whole population.

The seed moves every weight by w = w - lr * dw with one fixed lr. Its questions (how to choose
the learning rate; should it decay?) call for two more knobs, each per member:

Schedules scale the base lr over the epochs t = 0 .. T-1 (T = train.epochs):
    constant     lr_t = lr                                    (the seed)
    step         lr_t = lr * decay ** floor(t / decay_every)  (drops by `decay` every so often)
    exponential  lr_t = lr * decay ** (t / decay_every)       (the same decay, smoothly)
    cosine       lr_t = lr_min + (lr - lr_min) * (1 + cos(pi t / T)) / 2
    ramp         lr_t = lr * (lr_max / lr) ** (t / (T - 1))   (bpexp lr-find's range test)
A population's schedules become one table [K, T] computed up front, so each epoch reads its
column: one indexing operation, whatever mix of schedules the members use.

Optimizers (g = dL/dw, every operation elementwise and per member):
    gd        w -= lr * g                                     (the seed)
    momentum  v = mu * v + g;  w -= lr * v                    (heavy ball, as torch.optim.SGD)
    adam      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
              w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
Members with the same optimizer share a group; their coefficients (mu, b1, b2, eps) are
per-member columns, so a sweep over momentum still trains as one population.
tests/test_optim.py checks each against torch.optim on the same gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch

from bpexp.training.network import compiled

@dataclass(frozen=True)
class Schedule:
    name: str = "constant"
    decay: float = 0.5
    decay_every: int = 1000
    lr_min: float = 0.0
    lr_max: float = 0.0  # ramp only (lr-find)

    def factors(self, lr: float, epochs: int) -> np.ndarray:
        """lr_t for t = 0 .. epochs-1, in float64 (cast once, to the training dtype)."""
        t = np.arange(epochs, dtype=np.float64)
        if self.name == "constant":
            return np.full(epochs, lr)
        if self.name == "step":
            return lr * self.decay ** np.floor(t / self.decay_every)
        if self.name == "exponential":
            return lr * self.decay ** (t / self.decay_every)
        if self.name == "cosine":
            return self.lr_min + (lr - self.lr_min) * (1 + np.cos(math.pi * t / epochs)) / 2
        if self.name == "ramp":
            return lr * (self.lr_max / lr) ** (t / max(1, epochs - 1))
        raise ValueError(f"unknown schedule {self.name!r}")


@dataclass(frozen=True)
class Optimizer:
    name: str = "gd"
    momentum: float = 0.9  # momentum's mu, adam's b1
    beta2: float = 0.999  # adam
    eps: float = 1e-8  # adam


def lr_table(lrs: Sequence[float], schedules: Sequence[Schedule], epochs: int, device, dtype) -> torch.Tensor | None:
    """[K, epochs] learning rates, or None when every member is constant (the lr never changes)."""
    if all(s.name == "constant" for s in schedules):
        return None
    table = np.stack([s.factors(lr, epochs) for lr, s in zip(lrs, schedules)])
    return torch.as_tensor(table, dtype=dtype, device=device)


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-member value [K] shaped to broadcast against a parameter [K, ...]."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def _gd(params: List[torch.Tensor], grads: List[torch.Tensor], lr: torch.Tensor) -> None:
    for p, g in zip(params, grads):
        p.addcmul_(g, lr.view([-1] + [1] * (p.dim() - 1)), value=-1)


_gd_step = compiled(_gd)  # the same operations without a Python call each (bpexp/training/network.py: compiled)


class Stepper:
    """One optimizer's update for a group of K members: step(params, grads, lr [K])."""

    def __init__(self, optimizers: Sequence[Optimizer], params: Sequence[torch.Tensor]):
        names = {o.name for o in optimizers}
        if len(names) != 1:
            raise ValueError(f"one optimizer per group, got {sorted(names)}")
        self.name = names.pop()
        ref = params[0]
        as_col = lambda xs: torch.tensor(xs, dtype=ref.dtype, device=ref.device)  # noqa: E731
        self.mu = as_col([o.momentum for o in optimizers])
        self.beta2 = as_col([o.beta2 for o in optimizers])
        self.eps = as_col([o.eps for o in optimizers])
        self.t = 0
        self.m = [torch.zeros_like(p) for p in params] if self.name in ("momentum", "adam") else []
        self.v = [torch.zeros_like(p) for p in params] if self.name == "adam" else []

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the given members' state (the trainer compacts stopped members away)."""
        self.mu, self.beta2, self.eps = self.mu[rows], self.beta2[rows], self.eps[rows]
        self.m = [s[rows] for s in self.m]
        self.v = [s[rows] for s in self.v]

    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lr: torch.Tensor) -> None:
        self.t += 1
        if self.name == "gd":  # the seed's w = w - lr * dw, exactly
            _gd_step(list(params), list(grads), lr)
        elif self.name == "momentum":
            for p, g, v in zip(params, grads, self.m):
                v.mul_(_col(self.mu, v)).add_(g)
                p.addcmul_(v, _col(lr, p), value=-1)
        else:  # adam
            b1, b2 = self.mu, self.beta2
            c1 = 1 - b1.pow(self.t)  # bias corrections, per member [K]
            c2 = 1 - b2.pow(self.t)
            for p, g, m, v in zip(params, grads, self.m, self.v):
                m.mul_(_col(b1, m)).addcmul_(g, _col(1 - b1, g))
                v.mul_(_col(b2, v)).addcmul_(g * g, _col(1 - b2, g))
                denom = (v / _col(c2, v)).sqrt_().add_(_col(self.eps, v))
                p.addcmul_(m / denom, _col(lr / c1, p), value=-1)
