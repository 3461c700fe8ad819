"""The backward pass of bpexp/training/network.py, written out by hand for a whole population.

By the chain rule, with g = dL/dout = 2 (out - y) / N:

    dL/db_o = sum_n g                  dL/dw_o = sum_n g h_L
    dL/dz_L = g w_o act'(z_L)          dL/dz_l = act'(z_l) sum_j W_{l+1}[:, j] dL/dz_{l+1, j}
    dL/db_l = sum_n dL/dz_l            dL/dW_l[i, j] = sum_n h_{l-1, i} dL/dz_{l, j}

(act' is written through h = act(z), so the backward pass reuses h instead of keeping z.)
tests/test_network.py checks these against torch autograd on the plain formula.

Every gradient, and the loss, is a sum over the N training points. Those sums are taken at
once: each point's terms are written side by side into one [K, N, C] block (its columns laid
out by `column_layout`) and one tree sum over N reduces it, so that each sum adds in an order
that depends on N alone (network.py's bit-for-bit rule).
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, NamedTuple, Tuple

import torch

from bpexp.training.network import (ACTIVATIONS, Params, _activation_constants, _derivative, _forward, _inputs,
                                    compiled, const, tree_sum)


class ColumnLayout(NamedTuple):
    """Where each per-point term goes in the [K, N, C] block that one tree sum reduces.

    For D inputs and padded hidden widths H_1 .. H_L (h_0 = x, H_0 = D), left to right:

        [0, H_L)            g h_L                          sums to dL/dw_o
        [H_L, 2 H_L)        dz_L                           sums to dL/db_L
        then for l = L, L-1, ..., 1:
          H_{l-1} H_l cols  h_{l-1,i} dz_{l,j}, row-major  sums to dL/dW_l   (dw_at[l-1])
          H_{l-1} cols      dz_{l-1}, for l > 1            sums to dL/db_{l-1} (dz_at[l-2])
        C - 2               g                              sums to dL/db_o
        C - 1               (out - y)^2                    sums to N * the loss

    dz_l is written where its bias gradient is summed, and read back from there by the layer
    below: the backward pass needs no tensor of its own for it. The layout depends on D and the
    widths only, not on K: made once per shape (cached), outside the compiled function.
    """

    dw_at: List[int]  # each hidden layer's dL/dW_l: first column
    dz_at: List[int]  # each hidden layer's dz_l (dL/db_l): first column
    n_cols: int


@lru_cache(maxsize=None)
def column_layout(inputs: int, widths: Tuple[int, ...]) -> ColumnLayout:
    depth, top = len(widths), widths[-1]
    fan_in = (inputs, *widths[:-1])
    dw_at, dz_at = [0] * depth, [0] * depth
    dz_at[depth - 1] = top
    cursor = 2 * top
    for layer in range(depth - 1, -1, -1):
        dw_at[layer] = cursor
        cursor += fan_in[layer] * widths[layer]
        if layer > 0:
            dz_at[layer - 1] = cursor
            cursor += fan_in[layer]
    return ColumnLayout(dw_at, dz_at, cursor + 2)


def gradients(p: Params, x: torch.Tensor, y: torch.Tensor, activation: str):
    """Loss [K] (before the step) and its gradients [dw1, db1, dw2, db2, ...], by hand-written BP.

    Every sum over the N points is taken at once: the per-point terms of every gradient (and
    of the loss) are written side by side into one [K, N, C] tensor, summed by one tree.
    """
    x = _inputs(x)
    n = x.shape[0]
    c = [*_activation_constants(x), const(2.0 / n, x), const(float(n), x)]
    layout = column_layout(p.ws[0].shape[1], tuple(w.shape[2] for w in p.ws[:-1]))
    return _backprop_compiled(p.ws, p.bs, p.masks, x, y, ACTIVATIONS[activation], c, *layout)


def _backprop(ws: List[torch.Tensor], bs: List[torch.Tensor], masks: List[torch.Tensor], x: torch.Tensor,
              y: torch.Tensor, act: int, c: List[torch.Tensor], dw_at: List[int], dz_at: List[int],
              n_cols: int) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """`gradients`, on the tensors: c = [1, 2, -2, 2 / N, N] as `const`s; the columns of
    `column_layout`."""
    n, k = x.shape[0], ws[0].shape[0]
    out, hs = _forward(ws, bs, x, act, c)
    err = out.sub_(y)
    g = err * c[3]  # dL/dout [K, N]
    depth, top = len(hs), hs[-1].shape[2]
    cols = torch.empty([k, n, n_cols], dtype=out.dtype, device=out.device)
    torch.mul(hs[-1], g.unsqueeze(2), out=cols.narrow(2, 0, top))  # -> dw_o
    # dz_L = act'(z_L) * g * w_o, multiplied in this order (the seed's formula's order)
    dz = torch.mul(_derivative(hs[-1], act, c).mul_(g.unsqueeze(2)), ws[-1].unsqueeze(1),
                   out=cols.narrow(2, dz_at[depth - 1], top))
    for layer in range(depth - 1, -1, -1):
        h_in = x.unsqueeze(0) if layer == 0 else hs[layer - 1]  # [1 or K, N, I]
        i_n, j_n = ws[layer].shape[1], ws[layer].shape[2]
        torch.mul(h_in.unsqueeze(3), dz.unsqueeze(2), out=cols.narrow(2, dw_at[layer], i_n * j_n).view(k, n, i_n, j_n))
        if layer > 0:  # dz_{l-1} = act'(z_{l-1}) * sum_j W_l[:, j] dz_l[j]
            dh = tree_sum(dz.unsqueeze(2) * ws[layer].unsqueeze(1), 3)
            dz = torch.mul(_derivative(hs[layer - 1], act, c), dh, out=cols.narrow(2, dz_at[layer - 1], i_n))
    cols.select(2, n_cols - 2).copy_(g)  # -> db_o
    torch.mul(err, err, out=cols.select(2, n_cols - 1))  # -> the loss
    sums = tree_sum(cols, 1)  # [K, C]
    grads: List[torch.Tensor] = []
    for layer in range(depth):
        i_n, j_n = ws[layer].shape[1], ws[layer].shape[2]
        dw = sums.narrow(1, dw_at[layer], i_n * j_n).view(k, i_n, j_n)
        if layer > 0:  # weights leaving padded units must not move (a padded sigmoid unit is 0.5)
            dw = dw * masks[layer - 1].unsqueeze(2)
        grads.append(dw)
        grads.append(sums.narrow(1, dz_at[layer], j_n))
    grads.append(sums.narrow(1, 0, top) * masks[-1])
    grads.append(sums.select(1, n_cols - 2))
    return sums.select(1, n_cols - 1) / c[4], grads


_backprop_compiled = compiled(_backprop)
