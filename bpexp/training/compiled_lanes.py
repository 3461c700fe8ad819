"""Members of one width trained side by side, as the lanes of a block (compiled_epochs.py's
blocks): every operation is one loop over the lanes, which the compiler turns into vector
instructions whatever the width (a loop over a 4-unit member's units it left scalar).

Each lane does what compiled_epochs._train_member does for its member alone, operation for
operation (the same formulas, the same trees of additions), so a member trained in a block is
its solo run, bit for bit (tests/test_compiled_epochs.py). The layout: a block's arrays hold
the members side by side on their last axis (W1 [inputs, width, m], ...), and each point's
terms of every sum are one row of `cols` x m numbers (column r of member c at r m + c), so that
the sum over points is compiled_math.tree_sum_rows over rows of cols x m.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from bpexp.training.compiled_math import ONE, ZERO, activate_row, tree_sum_rows


@njit(error_model="numpy")
def _block_forward(width, W1, B1, WO, BO, x, points, act, Z, T, TI, out):
    """Z[n, j] = act(x[n] W1[:, j] + B1[j]) and out[n] = sum_j Z[n, j] WO[j] + BO, lane by lane:
    for each member what compiled_epochs._forward computes for it alone."""
    inputs, m = x.shape[1], out.shape[1]
    for n in range(points):
        for j in range(width):
            z = Z[n, j]
            if inputs == 1:  # the seed's one input: z = b + w x
                xn = x[n, 0]
                for c in range(m):
                    z[c] = B1[j, c] + W1[0, j, c] * xn
            else:
                for i in range(inputs):
                    xi = x[n, i]
                    for c in range(m):
                        TI[i, c] = xi * W1[i, j, c]
                tree_sum_rows(TI, inputs, m)
                for c in range(m):
                    z[c] = TI[0, c] + B1[j, c]
            activate_row(z, m, act)
            for c in range(m):
                T[j, c] = z[c] * WO[j, c]
        tree_sum_rows(T, width, m)
        for c in range(m):
            out[n, c] = T[0, c] + BO[c]


@njit(error_model="numpy")
def train_block(idx, width, w1, b1, wo, bo, wo_mask, x, y, x_test, y_test, lr, first, stop, test_epoch, act,
                train_loss, test_loss):
    """Members idx (all of padded width `width`) from epoch `first` to `stop`, as the lanes of a
    block: their weights copied in, trained, and copied back (the arguments as
    compiled_epochs.train_epochs takes them)."""
    m, inputs, points, test_points = len(idx), x.shape[1], x.shape[0], x_test.shape[0]
    most = max(points, test_points)
    scale = np.float32(2.0) / np.float32(points)  # network.py's const(2 / N), as _train_member's
    cols = (inputs + 2) * width + 2  # _train_member's columns: dL/dwo, dL/db1, dL/dw1, dL/dbo, the squared error
    W1, B1, WO, MASK = (np.empty((inputs, width, m), np.float32), np.empty((width, m), np.float32),
                        np.empty((width, m), np.float32), np.empty((width, m), np.float32))
    BO, RATE = np.empty(m, np.float32), np.empty(m, np.float32)
    Z, out = np.empty((most, width, m), np.float32), np.empty((most, m), np.float32)
    T, TI = np.empty((max(most, width), m), np.float32), np.empty((inputs, m), np.float32)
    block = np.empty((points, cols * m), np.float32)
    for c in range(m):
        k = idx[c]
        for j in range(width):
            for i in range(inputs):
                W1[i, j, c] = w1[k, i, j]
            B1[j, c], WO[j, c], MASK[j, c] = b1[k, j], wo[k, j], wo_mask[k, j]
        BO[c] = bo[k]
    column = 0
    for epoch in range(first, stop):
        if test_epoch[epoch]:
            _block_forward(width, W1, B1, WO, BO, x_test, test_points, act, Z, T, TI, out)
            for n in range(test_points):
                for c in range(m):
                    d = out[n, c] - y_test[n]
                    T[n, c] = d * d
            tree_sum_rows(T, test_points, m)
            for c in range(m):
                test_loss[idx[c], column] = T[0, c] / np.float32(test_points)
            column += 1
        _block_forward(width, W1, B1, WO, BO, x, points, act, Z, T, TI, out)
        for n in range(points):
            row, yn = block[n], y[n]
            g, sq = row[(cols - 2) * m:(cols - 1) * m], row[(cols - 1) * m:]
            for c in range(m):
                err = out[n, c] - yn
                g[c] = err * scale
                sq[c] = err * err
            for j in range(width):
                hn, dw, dz = Z[n, j], row[j * m:(j + 1) * m], row[(width + j) * m:(width + j + 1) * m]
                if act == 0:  # dz = act'(z) g wo, in the seed's formula's order; act' through h
                    for c in range(m):
                        dz[c] = ((ONE - hn[c] * hn[c]) * g[c]) * WO[j, c]
                elif act == 1:
                    for c in range(m):
                        dz[c] = ((hn[c] * (ONE - hn[c])) * g[c]) * WO[j, c]
                else:
                    for c in range(m):
                        dz[c] = ((ONE if hn[c] > ZERO else ZERO) * g[c]) * WO[j, c]
                for c in range(m):
                    dw[c] = hn[c] * g[c]
                for i in range(inputs):
                    xi, di = x[n, i], row[((2 + i) * width + j) * m:((2 + i) * width + j + 1) * m]
                    for c in range(m):
                        di[c] = xi * dz[c]
        tree_sum_rows(block, points, cols * m)  # every column of every lane, in tree_sum's order
        sums = block[0]
        for c in range(m):
            train_loss[idx[c], epoch - first] = sums[(cols - 1) * m + c] / np.float32(points)
            RATE[c] = lr[idx[c], epoch if lr.shape[1] > 1 else 0]
        for i in range(inputs):  # w = w - lr * dw
            for j in range(width):
                for c in range(m):
                    W1[i, j, c] = W1[i, j, c] - sums[((2 + i) * width + j) * m + c] * RATE[c]
        for j in range(width):
            for c in range(m):
                B1[j, c] = B1[j, c] - sums[(width + j) * m + c] * RATE[c]
                WO[j, c] = WO[j, c] - (sums[j * m + c] * MASK[j, c]) * RATE[c]  # a padded sigmoid unit is 0.5
        for c in range(m):
            BO[c] = BO[c] - sums[(cols - 2) * m + c] * RATE[c]
    for c in range(m):
        k = idx[c]
        for j in range(width):
            for i in range(inputs):
                w1[k, i, j] = W1[i, j, c]
            b1[k, j], wo[k, j] = B1[j, c], WO[j, c]
        bo[k] = BO[c]
