"""The seed's BP network, for a whole population of networks at once, with the forward and
backward passes written out by hand.

One network (the seed's): out = w2 @ act(w1 @ x + b1) + b2 with w1 [H,1], b1 [H,1],
w2 [1,H], b2 [1,1], and loss = mean((out - y)^2) over the N training points.

A population stacks K such networks. Every tensor gets a leading member axis, and networks
with fewer hidden units than the widest are padded with units whose weights are zero and
stay zero (their gradients are masked), so a padded population computes what each of its
members computes alone. Hidden units are the innermost axis ([K, N, H]): the sums over the
N points, which the backward pass needs three times, then run along contiguous memory.

    w1, b1, w2 : [K, H]      b2 : [K]      x, y : [N]
    z   = x * w1 + b1                 [K, N, H]  pre-activations
    h   = act(z)                      [K, N, H]
    out = sum_h h * w2 + b2           [K, N]
    L   = mean_n (out - y)^2          [K]

Backward, by the chain rule (g = dL/dout = 2 (out - y) / N):

    dL/db2 = sum_n g                  dL/dw2 = sum_n g * h
    dL/dz  = g * w2 * act'(z)         (act' written through h = act(z))
    dL/db1 = sum_n dL/dz              dL/dw1 = sum_n x * dL/dz

tests/test_network.py checks these against torch autograd on the seed's own formula.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch


def _tanh(z: torch.Tensor) -> torch.Tensor:
    # tanh(z) = 2 sigmoid(2z) - 1: the same function, but this CPU build's sigmoid kernel is
    # about 7x faster than its tanh, and tanh is most of the arithmetic of an epoch.
    return z.mul_(2).sigmoid_().mul_(2).sub_(1)


# activation -> (act(z), computed in place on z; act'(z) written through h = act(z)).
# Writing the derivative through h lets the backward pass reuse h instead of keeping z.
ACTIVATIONS = {
    "tanh": (_tanh, lambda h: torch.addcmul(h.new_ones(()), h, h, value=-1)),  # 1 - h^2
    "sigmoid": (torch.sigmoid_, lambda h: h * (1 - h)),
    "relu": (torch.relu_, lambda h: (h > 0).to(h.dtype)),
}


@dataclass
class Params:
    """Weights of K networks padded to H hidden units; mask[k, j] = 1 where unit j is real."""

    w1: torch.Tensor  # [K, H]
    b1: torch.Tensor  # [K, H]
    w2: torch.Tensor  # [K, H]
    b2: torch.Tensor  # [K]
    mask: torch.Tensor  # [K, H]

    def _map(self, f) -> "Params":
        return Params(*(f(getattr(self, fl.name)) for fl in fields(self)))

    def select(self, rows: torch.Tensor) -> "Params":
        return self._map(lambda t: t[rows])

    def clone(self) -> "Params":
        return self._map(torch.clone)

    def to(self, device) -> "Params":
        return self._map(lambda t: t.to(device))


def init_weights(hidden: int, seed: int) -> dict[str, torch.Tensor]:
    """One network's initial weights, drawn exactly as the seed draws them.

    The seed calls torch.manual_seed(seed) then torch.randn for w1 [H,1], b1 [H,1], w2 [1,H],
    b2 [1,1] in that order. A private generator with the same seed gives the same numbers
    without touching torch's global RNG. Drawn on the CPU so every device starts alike.
    """
    g = torch.Generator().manual_seed(seed)
    return {
        "w1": torch.randn(hidden, 1, generator=g),
        "b1": torch.randn(hidden, 1, generator=g),
        "w2": torch.randn(1, hidden, generator=g),
        "b2": torch.randn(1, 1, generator=g),
    }


def stack(weights: list[dict[str, torch.Tensor]], width: int | None = None) -> Params:
    """Stack single networks (seed-shaped tensors) into one population padded to `width` units."""
    width = width or max(w["w1"].shape[0] for w in weights)
    k, dtype = len(weights), weights[0]["w1"].dtype
    w1, b1, w2, mask = (torch.zeros(k, width, dtype=dtype) for _ in range(4))
    b2 = torch.zeros(k, dtype=dtype)
    for i, w in enumerate(weights):
        n = w["w1"].shape[0]
        w1[i, :n] = w["w1"][:, 0]
        b1[i, :n] = w["b1"][:, 0]
        w2[i, :n] = w["w2"][0]
        b2[i] = w["b2"][0, 0]
        mask[i, :n] = 1
    return Params(w1, b1, w2, b2, mask)


def unstack(p: Params, i: int, hidden: int) -> dict[str, torch.Tensor]:
    """Member i back in the seed's shapes, without its padding."""
    return {
        "w1": p.w1[i, :hidden, None].cpu(),
        "b1": p.b1[i, :hidden, None].cpu(),
        "w2": p.w2[i, None, :hidden].cpu(),
        "b2": p.b2[i].reshape(1, 1).cpu(),
    }


def forward(p: Params, x: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (out [K, N], h [K, N, H]) for inputs x [N]."""
    act, _ = ACTIVATIONS[activation]
    h = act(torch.addcmul(p.b1.unsqueeze(1), p.w1.unsqueeze(1), x.unsqueeze(1)))
    out = torch.baddbmm(p.b2.view(-1, 1, 1), h, p.w2.unsqueeze(2)).squeeze(2)
    return out, h


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member mean squared error [K]."""
    return (out - y).square_().mean(1)


def gradients(p: Params, x: torch.Tensor, y: torch.Tensor, activation: str):
    """Loss [K] (before the step) and its gradients (dw1, db1, dw2, db2), by hand-written BP."""
    _, dact = ACTIVATIONS[activation]
    out, h = forward(p, x, activation)
    err = out.sub_(y)
    loss = err.square().mean(1)
    g = err.mul_(2.0 / x.shape[0])  # dL/dout [K, N]
    db2 = g.sum(1)
    # Padded units must not move: with sigmoid their h is 0.5, not 0, so mask their gradient.
    dw2 = torch.bmm(g.unsqueeze(1), h).squeeze(1).mul_(p.mask)
    dz = dact(h).mul_(g.unsqueeze(2)).mul_(p.w2.unsqueeze(1))  # w2 = 0 on padding: dz = 0 there
    # Both sums over the points in one matmul: [x; 1] @ dz gives dw1 and db1 together.
    x1 = torch.stack((x, torch.ones_like(x)))  # [2, N]
    d = torch.matmul(x1, dz)  # [K, 2, H]
    return loss, (d[:, 0], d[:, 1], dw2, db2)


def sgd_step(p: Params, grads, lr: torch.Tensor) -> None:
    """The seed's update w = w - lr * dw, for every member with its own lr [K]."""
    dw1, db1, dw2, db2 = grads
    col = lr.unsqueeze(1)
    p.w1.addcmul_(dw1, col, value=-1)
    p.b1.addcmul_(db1, col, value=-1)
    p.w2.addcmul_(dw2, col, value=-1)
    p.b2.addcmul_(db2, lr, value=-1)
