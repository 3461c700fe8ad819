"""The seed's BP network, generalised to D inputs and L hidden layers, for a whole population
of networks at once, with the forward and backward passes written out by hand.

The seed's network (D = 1, L = 1): out = w2 @ act(w1 @ x + b1) + b2 with w1 [H,1], b1 [H,1],
w2 [1,H], b2 [1,1], and loss = mean((out - y)^2) over the N training points. A deeper one
(model.hidden = [H1, H2, ...]) stacks hidden layers h_l = act(W_l h_{l-1} + b_l), h_0 = x.

A population stacks K such networks of one depth. Every tensor gets a leading member axis,
and layers narrower than the widest member's are padded with units whose weights are zero
and stay zero (the gradients of weights leaving them are masked).

A member of a population computes *bit for bit* what it computes alone, so a sweep's trial
is the same computation as `bpexp train` with its config. Three rules make that hold:
- every sum is an explicit tree of additions (`tree_sum`) whose order depends only on the
  length summed, never on K, and widths are padded to powers of two with zeros, which a
  tree adds exactly (matrix-multiply kernels, by contrast, pick summation orders by shape);
- only elementwise operations that round the same in torch's vector and scalar code paths
  (+, *, /, exp, ...; torch.sigmoid is not one of them: measured);
- the same operations in the same order for every member.

    W_1 : [K, D, H1]   W_l : [K, H_{l-1}, H_l]   b_l : [K, H_l]   w_o : [K, H_L]   b_o : [K]
    z_l = sum_i h_{l-1,i} W_l[i, :] + b_l          [K, N, H_l]
    h_l = act(z_l)
    out = sum_j h_L,j w_o[j] + b_o                 [K, N]
    L   = mean_n (out - y)^2                       [K]

The backward pass, written out by hand: bpexp/training/backprop.py.
"""
from __future__ import annotations

from dataclasses import dataclass
import warnings
from typing import List, Sequence, Tuple

import torch


_CONSTANTS: dict = {}


def const(value: float, like: torch.Tensor) -> torch.Tensor:
    """`value` as a 0-dim CPU tensor of like's dtype, made once. An operation given a Python
    number converts it to such a tensor on every call (two dispatches: 6 an epoch were ~10 %
    of a small population's epoch); a 0-dim CPU tensor is the same scalar operand to torch,
    on every device (checked when this was written: the same bits, curves and weights, over
    populations of every activation, optimizer and depth)."""
    key = (value, like.dtype)
    c = _CONSTANTS.get(key)
    if c is None:
        c = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype)
    return c


# The activations by code (TorchScript takes ints, not functions). act(z) is computed in place
# on z; act'(z) is written through h = act(z), so the backward pass reuses h instead of keeping z.
ACTIVATIONS = {"tanh": 0, "sigmoid": 1, "relu": 2}


def _activate(z: torch.Tensor, act: int, c: List[torch.Tensor]) -> torch.Tensor:
    """act(z) in place; c = [1, 2, -2] as `const`s."""
    if act == 0:
        # tanh(z) = 1 - 2 / (1 + exp(2z)): the same function, about 2x faster than this CPU
        # build's tanh kernel (tanh is most of an epoch's arithmetic), and built from operations
        # that round alike in every code path (see the module docstring).
        return z.mul_(c[1]).exp_().add_(c[0]).reciprocal_().mul_(c[2]).add_(c[0])
    if act == 1:  # 1 / (1 + exp(-z)); torch.sigmoid rounds differently in its vector and scalar paths
        return z.neg_().exp_().add_(c[0]).reciprocal_()
    return torch.relu_(z)


def _derivative(h: torch.Tensor, act: int, c: List[torch.Tensor]) -> torch.Tensor:
    """act'(z), written through h = act(z)."""
    if act == 0:
        return torch.addcmul(c[0], h, h, value=-1)  # 1 - h^2
    if act == 1:
        return h * (1 - h)
    return (h > 0).to(h.dtype)


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
        if n % 2 == 1:  # an odd one out joins the next round
            s = torch.cat((s, t.narrow(dim, 2 * half, 1)), dim)
        t = s
        n = s.shape[dim]
    return t.squeeze(dim)


def widths_of(hidden) -> tuple[int, ...]:
    """model.hidden as a tuple of layer widths: 4 -> (4,), [16, 16] -> (16, 16)."""
    return (int(hidden),) if isinstance(hidden, int) else tuple(int(h) for h in hidden)


def shape_name(hidden) -> str:
    """model.hidden for run names: 4 -> "4", [16, 16] -> "16x16"."""
    return "x".join(map(str, widths_of(hidden)))


@dataclass
class Params:
    """Weights of K networks of one depth, each layer padded to a power-of-two width.

    ws: hidden layers' W_l [K, D_in, H_l], then the output's w_o [K, H_L];
    bs: hidden layers' b_l [K, H_l], then the output's b_o [K];
    masks: per hidden layer [K, H_l], 1 where a unit is real, 0 where it is padding.
    """

    ws: list[torch.Tensor]
    bs: list[torch.Tensor]
    masks: list[torch.Tensor]

    def _map(self, f) -> "Params":
        return Params([f(t) for t in self.ws], [f(t) for t in self.bs], [f(t) for t in self.masks])

    def select(self, rows: torch.Tensor) -> "Params":
        return self._map(lambda t: t[rows])

    def clone(self) -> "Params":
        return self._map(torch.clone)

    def to(self, device) -> "Params":
        return self._map(lambda t: t.to(device))

    def weights(self) -> list[torch.Tensor]:
        """The trained tensors w1, b1, w2, b2, ... in the order `gradients` returns their gradients."""
        return [t for wb in zip(self.ws, self.bs) for t in wb]


def init_weights(hidden, seed: int, inputs: int = 1) -> dict[str, torch.Tensor]:
    """One network's initial weights, drawn exactly as the seed draws them.

    The seed calls torch.manual_seed(seed) then torch.randn for w1 [H,1], b1 [H,1], w2 [1,H],
    b2 [1,1] in that order; a deeper or wider network continues the pattern, layer by layer:
    w_l [H_l, H_{l-1}] then b_l [H_l, 1], the output last. A private generator with the same
    seed gives the same numbers without touching torch's global RNG. Drawn on the CPU so
    every device starts alike.
    """
    g = torch.Generator().manual_seed(seed)
    sizes = [inputs, *widths_of(hidden), 1]
    out = {}
    for n, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:]), 1):
        out[f"w{n}"] = torch.randn(fan_out, fan_in, generator=g)
        out[f"b{n}"] = torch.randn(fan_out, 1, generator=g)
    return out


def layer_widths(weights: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The hidden widths of a network given in the seed's shapes."""
    return tuple(weights[f"w{n}"].shape[0] for n in range(1, len(weights) // 2))


def stack(weights: list[dict[str, torch.Tensor]], widths: Sequence[int] | None = None) -> Params:
    """Stack single networks (seed-shaped tensors) of one depth into one population, each layer
    padded to `widths` (by default the widest member's, rounded up to a power of two)."""
    shapes = [layer_widths(w) for w in weights]
    if len({len(s) for s in shapes}) != 1:
        raise ValueError("a population's networks must have the same number of layers")
    widths = list(widths or [padded_width(max(col)) for col in zip(*shapes)])
    if any(w != padded_width(w) for w in widths):
        raise ValueError(f"widths {widths} are not powers of two")
    k, dtype, inputs = len(weights), weights[0]["w1"].dtype, weights[0]["w1"].shape[1]
    depth = len(widths)
    fan_in = [inputs, *widths[:-1]]
    ws = [torch.zeros(k, a, b, dtype=dtype) for a, b in zip(fan_in, widths)] + [torch.zeros(k, widths[-1], dtype=dtype)]
    bs = [torch.zeros(k, b, dtype=dtype) for b in widths] + [torch.zeros(k, dtype=dtype)]
    masks = [torch.zeros(k, b, dtype=dtype) for b in widths]
    for i, (w, shape) in enumerate(zip(weights, shapes)):
        real_in = [inputs, *shape[:-1]]
        for n in range(depth):
            ws[n][i, :real_in[n], :shape[n]] = w[f"w{n + 1}"].T
            bs[n][i, :shape[n]] = w[f"b{n + 1}"][:, 0]
            masks[n][i, :shape[n]] = 1
        ws[depth][i, :shape[-1]] = w[f"w{depth + 1}"][0]
        bs[depth][i] = w[f"b{depth + 1}"][0, 0]
    return Params(ws, bs, masks)


def unstack(p: Params, i: int, hidden) -> dict[str, torch.Tensor]:
    """Member i back in the seed's shapes, without its padding."""
    shape = widths_of(hidden)
    real_in = [p.ws[0].shape[1], *shape[:-1]]
    out = {}
    for n in range(len(shape)):
        out[f"w{n + 1}"] = p.ws[n][i, :real_in[n], :shape[n]].T.contiguous().cpu()
        out[f"b{n + 1}"] = p.bs[n][i, :shape[n], None].cpu()
    out[f"w{len(shape) + 1}"] = p.ws[-1][i, None, :shape[-1]].cpu()
    out[f"b{len(shape) + 1}"] = p.bs[-1][i].reshape(1, 1).cpu()
    return out


def _inputs(x: torch.Tensor) -> torch.Tensor:
    return x.view(x.shape[0], -1)  # [N] (one input, the seed's) -> [N, 1]


def _forward(ws: List[torch.Tensor], bs: List[torch.Tensor], x: torch.Tensor, act: int,
             c: List[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """(out [K, N], [h_1, ..., h_L]) for inputs x [N, D]; see `forward`."""
    h = x.unsqueeze(0)
    hs: List[torch.Tensor] = []
    for layer in range(len(ws) - 1):
        w, b = ws[layer], bs[layer]
        if w.shape[1] == 1:  # one input (the seed's case): z = b + x w, one fused operation
            z = torch.addcmul(b.unsqueeze(1), w.view(w.shape[0], 1, -1), h)
        else:  # z = sum_i h_in[..., i] w[i, :] + b, for h_in [K or 1, N, I], w [K, I, J], b [K, J]
            z = tree_sum(h.unsqueeze(3) * w.unsqueeze(1), 2) + b.unsqueeze(1)
        h = _activate(z, act, c)
        hs.append(h)
    out = tree_sum(h * ws[-1].unsqueeze(1), 2) + bs[-1].unsqueeze(1)
    return out, hs


def forward(p: Params, x: torch.Tensor, activation: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Return (out [K, N], [h_1, ..., h_L] each [K, N, H_l]) for inputs x [N] or [N, D]."""
    return _forward_compiled(p.ws, p.bs, _inputs(x), ACTIVATIONS[activation], _activation_constants(x))


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member mean squared error [K]."""
    return tree_sum((out - y).square_(), 1) / const(float(out.shape[1]), out)


def _activation_constants(like: torch.Tensor) -> List[torch.Tensor]:
    return [const(1.0, like), const(2.0, like), const(-2.0, like)]


def compiled(fn):
    """fn compiled by TorchScript, or fn as it is where TorchScript cannot (it is deprecated in
    favour of torch.compile, whose fused kernels round differently from these operations and
    recompile as a population shrinks). Why compile: an epoch is ~60 small tensor operations,
    and their Python calls were half its time; compiled, the same operations run the same ATen
    kernels (the same bits: tests/test_network.py) without them: a 4-member epoch 198 -> 91 us
    (2-core machine)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
            return torch.jit.script(fn)
    except Exception:  # a torch without TorchScript: the same function, uncompiled
        return fn


_forward_compiled = compiled(_forward)
