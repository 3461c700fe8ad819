"""The seed's network trained epoch after epoch in one compiled loop (numba), on the CPU.

Why: the tensor program of network.py and backprop.py spends an epoch on ~60 operations over
tensors of a few hundred numbers, and each operation costs ~1.4 us of dispatch whatever its
size. A 4-trial batch of a study's start (12 networks, 5000 epochs) took ~0.8 s that way, for
a few tens of milliseconds of arithmetic. Here the whole loop over members, epochs, points and
units is one machine-code function, vectorised over the units: no dispatch, no temporary
tensors (benchmarks/epoch_loop.py: ~0.07 s a batch, sharpness included).

What it covers: one hidden layer (the seed's shape, any number of inputs), every activation,
plain gradient descent (the seed's w = w - lr * dw) with any learning-rate schedule, on the
CPU. population.py uses it for exactly those groups (`covers`), whatever else the population
holds, so a config is trained by the same code alone and in a population; other optimizers,
deeper networks and CUDA keep the tensor program.

The arithmetic is network.py's, operation for operation, in float32: the same formulas
(tanh as 1 - 2 / (1 + exp(2z)), act' through h), and every sum over points or units is the
same tree of additions (network.tree_sum: halves, then halves of those), so its order depends
on the length summed, never on the population. Each member is computed on its own, over its
own width padded to a power of two (network.padded_width), as it is alone: a member is its
solo run, bit for bit. Against the tensor program the results agree to float32 rounding, not
bit for bit (this loop's exp, `exp32`, is not torch's, and torch's addcmul rounds once where
this rounds twice): within 1e-5 on smooth trajectories, while near the edge of stability two
float32 programs' trajectories part. The seed's 0.008276 is reproduced (tests/test_network.py).
Sharpness (the top eigenvalue of the loss Hessian) of these groups is measured exactly, from
the Hessian written out (compiled_sharpness.py), where sharpness.py iterates on the tensor program.
Compiling uses numba's "numpy" error model: x / 0 is inf, as in torch, not an exception (the
exception's check also kept divisions from being vectorised).

Compiled once per install (~5 s; `cache=True` keeps the machine code beside this file, or in
numba's user-wide cache where that is read-only), then loaded in ~0.4 s per process.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Optional

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic

_0, _1, _2, _M2, _HALF = np.float32(0), np.float32(1), np.float32(2), np.float32(-2), np.float32(0.5)


def covers(activation: str, optimizer: str, depth: int, device: str) -> bool:
    """Whether this loop trains a group of this structure (population.py asks per group)."""
    return depth == 1 and optimizer == "gd" and device == "cpu" and activation in ("tanh", "sigmoid", "relu")


# exp, written out. libm's expf is a function call, and a call keeps the compiler from
# vectorising the loop over units around it: with it, the forward pass ran one unit at a time
# and exp was a third of the loop's time. This is the classic algorithm (SLEEF's expf_u10, the
# one torch's CPU kernels use, without fused multiply-adds): exp(d) = 2^q exp(s) with
# q = round(d / ln 2) and s = d - q ln 2 (ln 2 split in two, so that q ln2_hi is exact), exp(s)
# by a degree-7 polynomial on |s| <= ln2 / 2, and 2^q built from its bits (in two halves, so
# that 2^q below the normal range is still reached by multiplication). Within 1 ULP of the
# true exp (tests/test_compiled_epochs.py: a million arguments), and 8x faster than libm's
# here, vectorised.
@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


_INV_LN2 = np.float32(1.442695040888963407359924681001892137426645954152985934135449406931)
_LN2_HI, _LN2_LO = np.float32(0.693145751953125), np.float32(1.428606765330187045e-06)
_P0, _P1, _P2 = np.float32(0.000198527617612853646278381), np.float32(0.00139304355252534151077271), \
    np.float32(0.00833336077630519866943359)
_P3, _P4 = np.float32(0.0416664853692054748535156), np.float32(0.166666671633720397949219)
_EXP_LOW, _EXP_HIGH = np.float32(-104), np.float32(100)  # exp is 0 below, inf above (in float32)


@njit(inline="always", error_model="numpy")
def _pow2(q):
    return _float32_from_bits(np.int32((q + 127) << 23))


@njit(inline="always", error_model="numpy")
def exp32(d):
    """exp(d) for a float32 d, within 1 ULP; NaN, inf and underflow as libm's."""
    c = d if d > _EXP_LOW else _EXP_LOW
    c = c if c < _EXP_HIGH else _EXP_HIGH
    qf = np.floor(c * _INV_LN2 + _HALF)
    q = np.int32(qf)
    s = (c - qf * _LN2_HI) - qf * _LN2_LO
    u = (((((_P0 * s + _P1) * s + _P2) * s + _P3) * s + _P4) * s + _HALF)
    u = _1 + ((s * s) * u + s)
    half = q >> 1
    u = u * _pow2(half) * _pow2(q - half)
    if d < _EXP_LOW:
        u = _0
    if d > _EXP_HIGH:
        u = np.float32(np.inf)
    if d != d:
        u = d
    return u


@njit(inline="always", error_model="numpy")
def _activate_row(z, width, act):
    """act(z[:width]) in place; tanh as network.py computes it, 1 - 2 / (1 + exp(2z)).
    One loop per activation, so that each is vectorised over the units."""
    if act == 0:
        for j in range(width):
            z[j] = (_1 / (exp32(z[j] * _2) + _1)) * _M2 + _1
    elif act == 1:
        for j in range(width):
            z[j] = _1 / (exp32(-z[j]) + _1)
    else:
        for j in range(width):
            z[j] = z[j] if z[j] > _0 else _0


@njit(inline="always", error_model="numpy")
def _tree(v, n):
    """v[0] = the sum of v[:n], added as network.tree_sum adds (halves, then halves of those;
    an odd one out joins the next round). Overwrites v."""
    while n > 1:
        half = n // 2
        for i in range(half):
            v[i] = v[i] + v[i + half]
        if n % 2 == 1:
            v[half] = v[2 * half]
        n = half + n % 2
    return v[0]


@njit(inline="always", error_model="numpy")
def _tree_rows(block, n, cols):
    """block[0, :cols] = the sum of rows 0 .. n-1, in _tree's order. Overwrites the block."""
    while n > 1:
        half = n // 2
        for i in range(half):
            for c in range(cols):
                block[i, c] = block[i, c] + block[i + half, c]
        if n % 2 == 1:
            for c in range(cols):
                block[half, c] = block[2 * half, c]
        n = half + n % 2


@njit(inline="always", error_model="numpy")
def _forward(k, width, w1, b1, wo, bo, x, points, act, h, terms, out):
    """h[:points, :width] = act(x w1 + b1) and out[:points] = h wo + bo, for member k."""
    inputs = x.shape[1]
    for n in range(points):
        z = h[n]
        if inputs == 1:  # the seed's one input: z = b + w x
            xn = x[n, 0]
            for j in range(width):
                z[j] = b1[k, j] + w1[k, 0, j] * xn
        else:  # z = (tree sum over inputs of x_i w_ij) + b
            for j in range(width):
                for i in range(inputs):
                    terms[i] = x[n, i] * w1[k, i, j]
                z[j] = _tree(terms, inputs) + b1[k, j]
        _activate_row(z, width, act)
        for j in range(width):
            terms[j] = z[j] * wo[k, j]
        out[n] = _tree(terms, width) + bo[k]


@njit(inline="always", error_model="numpy")
def _mse(out, y, points, terms):
    for n in range(points):
        d = out[n] - y[n]
        terms[n] = d * d
    return _tree(terms, points) / np.float32(points)


def compile_cached(fn):
    """fn compiled, its machine code cached on disk (beside this file, or in numba's user-wide
    cache where that is read-only); compiled in memory where no cache can be written at all
    (numba raises at decoration then), so a read-only install still trains, ~3 s later.
    nogil: threads each train a part of the members at once (population.py)."""
    try:
        return njit(cache=True, error_model="numpy", nogil=True)(fn)
    except RuntimeError:
        return njit(error_model="numpy", nogil=True)(fn)


def train_epochs(w1, b1, wo, bo, wo_mask, widths, x, y, x_test, y_test, lr, first, stop, test_epoch, act,
                 train_loss, test_loss):
    """Train every member k from epoch `first` to `stop` (exclusive), in place.

    w1 [K, D, H], b1 [K, H], wo [K, H], bo [K]: the weights (network.Params' tensors, shared);
    wo_mask [K, H]: 1 on real units; widths [K]: each member's own padded width (<= H);
    x [N, D], y [N], x_test [M, D], y_test [M]; lr [K, T]: T = 1 (constant) or a column per epoch;
    test_epoch [epochs]: where a test loss is taken (before that epoch's step);
    act: network.ACTIVATIONS' code. Writes train_loss [K, stop - first] (each epoch's loss before
    its step) and test_loss [K, test epochs in the range].
    """
    members, inputs, padded = w1.shape
    points, test_points = x.shape[0], x_test.shape[0]
    scale = np.float32(2.0) / np.float32(points)  # network.py's const(2 / N): rounded once, from a double
    h = np.empty((max(points, test_points), padded), np.float32)
    out = np.empty(max(points, test_points), np.float32)
    terms = np.empty(max(points, test_points, padded, inputs), np.float32)
    # Each point's terms of every sum, side by side (backprop.py's column block): its columns
    # are dL/dwo (width), dL/db1 (width), dL/dw1 (inputs x width), dL/dbo, the squared error.
    block = np.empty((points, (inputs + 2) * padded + 2), np.float32)
    for k in range(members):
        width = widths[k]
        cols = (inputs + 2) * width + 2
        column = 0
        for epoch in range(first, stop):
            if test_epoch[epoch]:
                _forward(k, width, w1, b1, wo, bo, x_test, test_points, act, h, terms, out)
                test_loss[k, column] = _mse(out, y_test, test_points, terms)
                column += 1
            _forward(k, width, w1, b1, wo, bo, x, points, act, h, terms, out)
            for n in range(points):
                err = out[n] - y[n]
                g = err * scale  # dL/dout
                row, hn = block[n], h[n]
                if act == 0:  # dz = act'(z) g wo, in the seed's formula's order; act' through h
                    for j in range(width):
                        row[width + j] = ((_1 - hn[j] * hn[j]) * g) * wo[k, j]
                elif act == 1:
                    for j in range(width):
                        row[width + j] = ((hn[j] * (_1 - hn[j])) * g) * wo[k, j]
                else:
                    for j in range(width):
                        row[width + j] = ((_1 if hn[j] > _0 else _0) * g) * wo[k, j]
                for j in range(width):
                    row[j] = hn[j] * g
                for i in range(inputs):
                    xi = x[n, i]
                    for j in range(width):
                        row[(2 + i) * width + j] = xi * row[width + j]
                row[cols - 2] = g
                row[cols - 1] = err * err
            _tree_rows(block, points, cols)
            sums = block[0]
            train_loss[k, epoch - first] = sums[cols - 1] / np.float32(points)
            rate = lr[k, epoch if lr.shape[1] > 1 else 0]
            for i in range(inputs):  # w = w - lr * dw
                for j in range(width):
                    w1[k, i, j] = w1[k, i, j] - sums[(2 + i) * width + j] * rate
            for j in range(width):
                b1[k, j] = b1[k, j] - sums[width + j] * rate
                wo[k, j] = wo[k, j] - (sums[j] * wo_mask[k, j]) * rate  # a padded sigmoid unit is 0.5
            bo[k] = bo[k] - sums[cols - 2] * rate


train_epochs = compile_cached(train_epochs)

# The loop holds no GIL (nogil), so threads train parts of a population at once, a core each.
# Each member is computed on its own, so any split gives the same bits.
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
MIN_PART = 4  # members a thread trains at least (a 4-trial start batch of 12 networks: 2 parts)


def parts(widths: np.ndarray, threads: int) -> list[int]:
    """Bounds 0 = b0 < b1 < ... = K (0, 0 for none) that split the members into up to `threads`
    runs of consecutive members with about equal work (a member's grows with its width)."""
    k = len(widths)
    n = max(1, min(threads, k // MIN_PART))
    work = np.cumsum(np.asarray(widths, dtype=np.float64) + 1)
    cuts = {int(np.searchsorted(work, work[-1] * i / n)) + 1 for i in range(1, n)}
    return [0, *sorted(c for c in cuts if 0 < c < k), k]


_helpers: Optional[ThreadPoolExecutor] = None  # the threads of the parts after the first, kept from call to call


def train_in_parts(per_member: tuple, shared: tuple, lr, first, stop, test_epoch, act, train_loss, test_loss) -> None:
    """train_epochs(*per_member, *shared, lr, ...) with the members (the first axis of
    per_member's arrays, lr's and the losses') split among THREADS threads (parts): this one
    trains the first part, the kept threads the others (a pool made once: a new one each call
    cost a 4-trial start batch 0.097 -> 0.110 s, its 100 calls of 50 epochs)."""
    global _helpers

    def part(a: int, b: int) -> None:
        train_epochs(*(v[a:b] for v in per_member), *shared, lr[a:b], first, stop, test_epoch, act,
                     train_loss[a:b], test_loss[a:b])

    bounds = parts(per_member[-1], THREADS)
    if len(bounds) > 2 and _helpers is None:
        _helpers = ThreadPoolExecutor(THREADS - 1, thread_name_prefix="bpexp-part")
    others = [_helpers.submit(part, a, b) for a, b in zip(bounds[1:-1], bounds[2:])]
    try:
        part(bounds[0], bounds[1])
    finally:  # a Ctrl-C here is raised once the others' chunk ends: none writes after
        wait(others)
    for f in others:
        f.result()  # an error in a thread's part, raised here


def build() -> None:
    """Compile (or load from the cache) the loops for the argument types population.py passes,
    on an empty population: a process can pay that before it trains, or a test session once
    before its workers start."""
    one, none = np.zeros((1, 1), np.float32), np.zeros((0, 1), np.float32)
    w1, bo, y = np.zeros((0, 1, 1), np.float32), np.zeros(0, np.float32), np.zeros(1, np.float32)
    units = np.zeros(0, np.int64)
    train_epochs(w1, none, none, bo, none, units, one, y, one, y, none, 0, 0, np.zeros(1, np.bool_), 0, none, none)
    from bpexp.training import compiled_sharpness

    compiled_sharpness.hessians(w1, none, none, bo, units, one, y, 0, np.zeros((0, 1, 1)))
