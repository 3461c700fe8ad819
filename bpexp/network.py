"""The seed's BP network, for a whole population of networks at once, with the forward and
backward passes written out by hand.

One network (the seed's): out = w2 @ act(w1 @ x + b1) + b2 with w1 [H,1], b1 [H,1],
w2 [1,H], b2 [1,1], and loss = mean((out - y)^2) over the N training points.

A population stacks K such networks. Every tensor gets a leading member axis, and networks
with fewer hidden units than the widest are padded with units whose weights are zero and
stay zero (their gradients are masked). Hidden units are the innermost axis ([K, N, H]).

A member of a population computes *bit for bit* what it computes alone, so a sweep's trial
is the same computation as `bpexp train` with its config. Three rules make that hold:
- every sum is an explicit tree of additions (`tree_sum`) whose order depends only on the
  length summed, never on K, and widths are padded to powers of two with zeros, which a
  tree adds exactly (matrix-multiply kernels, by contrast, pick summation orders by shape);
- only elementwise operations that round the same in torch's vector and scalar code paths
  (+, *, /, exp, ...; torch.sigmoid is not one of them: measured);
- the same operations in the same order for every member.

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
    # tanh(z) = 1 - 2 / (1 + exp(2z)): the same function, about 2x faster than this CPU
    # build's tanh kernel (tanh is most of an epoch's arithmetic), and built from operations
    # that round alike in every code path (see the module docstring).
    return z.mul_(2).exp_().add_(1).reciprocal_().mul_(-2).add_(1)


def _sigmoid(z: torch.Tensor) -> torch.Tensor:
    # 1 / (1 + exp(-z)); torch.sigmoid rounds differently in its vector and scalar paths.
    return z.neg_().exp_().add_(1).reciprocal_()


# activation -> (act(z), computed in place on z; act'(z) written through h = act(z)).
# Writing the derivative through h lets the backward pass reuse h instead of keeping z.
ACTIVATIONS = {
    "tanh": (_tanh, lambda h: torch.addcmul(h.new_ones(()), h, h, value=-1)),  # 1 - h^2
    "sigmoid": (_sigmoid, lambda h: h * (1 - h)),
    "relu": (torch.relu_, lambda h: (h > 0).to(h.dtype)),
}


def padded_width(hidden: int) -> int:
    """Widths are padded to a power of two, so tree sums over units are padding-invariant."""
    return 1 << max(0, hidden - 1).bit_length()


def tree_sum(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over `dim` by adding halves, then halves of those, ...: the order of additions
    depends only on the length of `dim`. Trailing zeros (padding) leave the result exact."""
    n = t.shape[dim]
    while n > 1:
        half = n // 2
        s = t.narrow(dim, 0, half) + t.narrow(dim, half, half)
        if n % 2:  # an odd one out joins the next round
            s = torch.cat((s, t.narrow(dim, 2 * half, 1)), dim)
        t, n = s, s.shape[dim]
    return t.squeeze(dim)


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

    def weights(self) -> list[torch.Tensor]:
        """The trained tensors, in the order `gradients` returns their gradients."""
        return [self.w1, self.b1, self.w2, self.b2]

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
    """Stack single networks (seed-shaped tensors) into one population padded to `width` units
    (by default the widest member's width, rounded up to a power of two)."""
    width = width or padded_width(max(w["w1"].shape[0] for w in weights))
    if width != padded_width(width):
        raise ValueError(f"width {width} is not a power of two")
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
    out = tree_sum(h * p.w2.unsqueeze(1), 2) + p.b2.unsqueeze(1)
    return out, h


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member mean squared error [K]."""
    return tree_sum((out - y).square_(), 1) / out.shape[1]


def gradients(p: Params, x: torch.Tensor, y: torch.Tensor, activation: str):
    """Loss [K] (before the step) and its gradients (dw1, db1, dw2, db2), by hand-written BP."""
    _, dact = ACTIVATIONS[activation]
    k, width = p.w1.shape
    n = x.shape[0]
    out, h = forward(p, x, activation)
    err = out.sub_(y)
    g = err * (2.0 / n)  # dL/dout [K, N]
    # Every sum over the points at once: one tree over a [K, N, 3H + 2] tensor whose columns
    # are g*h (-> dw2), dz (-> db1), dz*x (-> dw1), g (-> db2) and err^2 (-> the loss).
    cols = torch.empty(k, n, 3 * width + 2, dtype=h.dtype, device=h.device)
    torch.mul(h, g.unsqueeze(2), out=cols[:, :, :width])
    dz = torch.mul(dact(h).mul_(g.unsqueeze(2)), p.w2.unsqueeze(1), out=cols[:, :, width:2 * width])
    torch.mul(dz, x.view(1, n, 1), out=cols[:, :, 2 * width:3 * width])
    cols[:, :, 3 * width] = g
    torch.mul(err, err, out=cols[:, :, 3 * width + 1])
    sums = tree_sum(cols, 1)  # [K, 3H + 2]
    # Padded units must not move: with sigmoid their h is 0.5, not 0, so mask their dw2.
    dw2 = sums[:, :width] * p.mask  # (dz, hence dw1 and db1, is 0 there since w2 = 0)
    return sums[:, 3 * width + 1] / n, (sums[:, 2 * width:3 * width], sums[:, width:2 * width], dw2,
                                       sums[:, 3 * width])

