"""The seed's network trained epoch after epoch in one compiled loop (numba), on the CPU.

Why: the tensor program of network.py and backprop.py spends an epoch on ~60 operations over
tensors of a few hundred numbers, and each operation costs ~1.4 us of dispatch whatever its
size. A 4-trial batch of a study's start (12 networks, 5000 epochs) took ~0.8 s that way, for
a few tens of milliseconds of arithmetic. Here the whole loop over members, epochs, points and
units is one machine-code function: no dispatch, no temporary tensors (benchmarks/epoch_loop.py:
~0.07 s a batch, sharpness included). Members of one width are trained side by side as the
lanes of a block (compiled_lanes.py), every operation one loop over the lanes, which the compiler
turns into vector instructions; a member left over is trained alone (`_train_member`), its loops
over its units. Each lane does its member's operations in the order it does them alone, so
either way a member is its solo run, bit for bit (tests/test_compiled_epochs.py).

What it covers: one hidden layer (the seed's shape, any number of inputs), every activation,
plain gradient descent (the seed's w = w - lr * dw) with any learning-rate schedule, on the
CPU. population.py uses it for exactly those groups (`covers`), whatever else the population
holds, so a config is trained by the same code alone and in a population; other optimizers,
deeper networks and CUDA keep the tensor program.

The arithmetic is network.py's, operation for operation, in float32: the same formulas
(tanh as 1 - 2 / (1 + exp(2z)), act' through h), and every sum over points or units is the
same tree of additions (network.tree_sum: halves, then halves of those), so its order depends
on the length summed, never on the population; each member at its own width padded to a power
of two (network.padded_width), as alone. Against the tensor program the results agree to
float32 rounding, not bit for bit (compiled_math.exp32 is not torch's exp, and torch's addcmul
rounds once where this rounds twice): within 1e-5 on smooth trajectories, while near the edge of stability two
float32 programs' trajectories part. The seed's 0.008276 is reproduced (tests/test_network.py).
Sharpness (the top eigenvalue of the loss Hessian) of these groups is measured exactly, from
the Hessian written out (compiled_sharpness.py), where sharpness.py iterates on the tensor program.
Compiled once per install (~18 s on the 2-core machine, 9.5 s before the blocks; `cache=True`
keeps the machine code beside this file, or in numba's user-wide cache where that is read-only),
then loaded in ~0.5 s per process.
"""
from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Optional

import numpy as np
from numba import njit

from bpexp.training.compiled_lanes import train_block
from bpexp.training.compiled_math import ONE, ZERO, activate_row, compile_cached, tree_sum, tree_sum_rows


def covers(activation: str, optimizer: str, depth: int, device: str) -> bool:
    """Whether this loop trains a group of this structure (population.py asks per group)."""
    return depth == 1 and optimizer == "gd" and device == "cpu" and activation in ("tanh", "sigmoid", "relu")


@njit(error_model="numpy")
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
                z[j] = tree_sum(terms, inputs) + b1[k, j]
        activate_row(z, width, act)
        for j in range(width):
            terms[j] = z[j] * wo[k, j]
        out[n] = tree_sum(terms, width) + bo[k]


@njit(inline="always", error_model="numpy")
def _mse(out, y, points, terms):
    for n in range(points):
        d = out[n] - y[n]
        terms[n] = d * d
    return tree_sum(terms, points) / np.float32(points)


@njit(error_model="numpy")
def _train_member(k, w1, b1, wo, bo, wo_mask, widths, x, y, x_test, y_test, lr, first, stop, test_epoch, act,
                  train_loss, test_loss, h, out, terms, block):
    """Member k from epoch `first` to `stop`, alone: its loops run over its units."""
    inputs, points, test_points = x.shape[1], x.shape[0], x_test.shape[0]
    scale = np.float32(2.0) / np.float32(points)  # network.py's const(2 / N): rounded once, from a double
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
                    row[width + j] = ((ONE - hn[j] * hn[j]) * g) * wo[k, j]
            elif act == 1:
                for j in range(width):
                    row[width + j] = ((hn[j] * (ONE - hn[j])) * g) * wo[k, j]
            else:
                for j in range(width):
                    row[width + j] = ((ONE if hn[j] > ZERO else ZERO) * g) * wo[k, j]
            for j in range(width):
                row[j] = hn[j] * g
            for i in range(inputs):
                xi = x[n, i]
                for j in range(width):
                    row[(2 + i) * width + j] = xi * row[width + j]
            row[cols - 2] = g
            row[cols - 1] = err * err
        tree_sum_rows(block, points, cols)
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


# The blocks. Measured (the loop alone, one thread, 5000 epochs, 2-core AMD EPYC with AVX2: 8
# float32 a vector; docs/findings.md, "Members as vector lanes"): 40 members of width 4 took 1670
# ns a member an epoch alone and 370 ns as lanes; width 8 1690 -> 670, width 16 2000 -> 1150.
# Blocks of 32, 16 or 8 lanes (whole vectors); fewer than 8 members of a width (16 at width 16,
# and any number at width 32 and up, whose own loops fill the vectors) train alone, which was
# faster there.
BLOCKS = (32, 16, 8)


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
    most = max(points, test_points)
    h = np.empty((most, padded), np.float32)  # a member alone: its units side by side
    out = np.empty(most, np.float32)
    terms = np.empty(max(most, padded, inputs), np.float32)
    # Each point's terms of every sum, side by side (backprop.py's column block): its columns
    # are dL/dwo (width), dL/db1 (width), dL/dw1 (inputs x width), dL/dbo, the squared error.
    block = np.empty((points, (inputs + 2) * padded + 2), np.float32)
    order = np.argsort(widths, kind="mergesort")  # stable: a width's members in their order
    start = 0
    while start < members:
        width = widths[order[start]]
        end = start
        while end < members and widths[order[end]] == width:
            end += 1
        smallest = 8 if width <= 8 else 16 if width <= 16 else 2 * BLOCKS[0]
        for size in BLOCKS:
            while size >= smallest and end - start >= size:
                train_block(order[start:start + size], width, w1, b1, wo, bo, wo_mask, x, y, x_test, y_test, lr,
                            first, stop, test_epoch, act, train_loss, test_loss)
                start += size
        for k in order[start:end]:
            _train_member(k, w1, b1, wo, bo, wo_mask, widths, x, y, x_test, y_test, lr, first, stop, test_epoch,
                          act, train_loss, test_loss, h, out, terms, block)
        start = end


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


COMPILE_NOTICE = "bpexp: compiling the training loop, once for this install (~20 s on 2 cores)"
_loaded = False


def load(notice_after: float = 2.0) -> None:
    """build() once a process, before its first population trains. From numba's cache it takes
    ~0.5 s; the first command after an install compiles (~20 s: a new venv's `bpexp train` took
    23.4 s, then 4.3 s) and says so on stderr, or it looked hung."""
    global _loaded
    if not _loaded:
        notice = threading.Timer(notice_after, lambda: print(COMPILE_NOTICE, file=sys.stderr, flush=True))
        notice.daemon = True
        notice.start()
        try:
            build()
        finally:
            notice.cancel()
        _loaded = True
