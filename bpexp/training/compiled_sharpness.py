"""Sharpness (sharpness.py: the largest eigenvalue of the training loss's Hessian) of a
one-hidden-layer population, exactly, for the groups compiled_epochs.py trains.

Why not sharpness.py's Krylov iteration: on the tensor program it costs 5-30 ms a measurement
of a 12-network batch, as much as the batch's 5000 compiled epochs (a study measures 11 times
in 5000 epochs). For one hidden layer the Hessian is small (P = (D + 2) H + 1 weights: 97 at
32 units) and has a closed form; written out and handed to LAPACK, its top eigenvalue is exact,
where the iteration stops at a relative tolerance of 1e-5. With L = mean_n r_n^2,
r_n = out_n - y_n and J_n = d out_n / dw:

    H = (2 / N) sum_n (J_n J_n^T + r_n d2 out_n / dw2)

where d2 out / dw2 couples only the weights of one unit j (e = (x, 1): its inputs and bias):

    d2 out / de_a de_b = wo_j act''(z_j) e_a e_b,   d2 out / de_a dwo_j = act'(z_j) e_a.

In float64 from the float32 weights. Checked against torch.autograd.functional.hessian
(tests/test_compiled_epochs.py).
"""
from __future__ import annotations

import numpy as np

from bpexp.training.compiled_math import compile_cached


def hessians(w1, b1, wo, bo, units, x, y, act, out):
    """out[k, :P_k, :P_k] = member k's loss Hessian over its real units (weights in the order
    W (inputs x units, row-major), b, wo, bo; P_k = (inputs + 2) units_k + 1)."""
    members, inputs, _ = w1.shape
    points = x.shape[0]
    h = np.empty(w1.shape[2])
    d1 = np.empty(w1.shape[2])
    d2 = np.empty(w1.shape[2])
    jac = np.empty(out.shape[1])
    for k in range(members):
        u = units[k]
        size = (inputs + 2) * u + 1
        hk = out[k]
        for a in range(size):
            for b in range(size):
                hk[a, b] = 0.0
        for n in range(points):
            o = np.float64(bo[k])
            for j in range(u):
                z = np.float64(b1[k, j])
                for i in range(inputs):
                    z += np.float64(w1[k, i, j]) * np.float64(x[n, i])
                if act == 0:
                    h[j] = np.tanh(z)
                    d1[j] = 1.0 - h[j] * h[j]
                    d2[j] = -2.0 * h[j] * d1[j]
                elif act == 1:
                    h[j] = 1.0 / (1.0 + np.exp(-z))
                    d1[j] = h[j] * (1.0 - h[j])
                    d2[j] = d1[j] * (1.0 - 2.0 * h[j])
                else:
                    h[j] = z if z > 0.0 else 0.0
                    d1[j] = 1.0 if z > 0.0 else 0.0
                    d2[j] = 0.0
                o += np.float64(wo[k, j]) * h[j]
            r = o - np.float64(y[n])
            for j in range(u):
                for i in range(inputs + 1):
                    e = np.float64(x[n, i]) if i < inputs else 1.0
                    jac[i * u + j] = np.float64(wo[k, j]) * d1[j] * e
                jac[(inputs + 1) * u + j] = h[j]
            jac[size - 1] = 1.0
            for a in range(size):
                for b in range(size):
                    hk[a, b] += jac[a] * jac[b]
            for j in range(u):
                curve, slope, top = r * np.float64(wo[k, j]) * d2[j], r * d1[j], (inputs + 1) * u + j
                for a in range(inputs + 1):
                    ea = np.float64(x[n, a]) if a < inputs else 1.0
                    for b in range(inputs + 1):
                        eb = np.float64(x[n, b]) if b < inputs else 1.0
                        hk[a * u + j, b * u + j] += curve * ea * eb
                    hk[a * u + j, top] += slope * ea
                    hk[top, a * u + j] += slope * ea
        for a in range(size):
            for b in range(size):
                hk[a, b] *= 2.0 / points


hessians = compile_cached(hessians)


def sharpness(w1, b1, wo, bo, units, x, y, act) -> np.ndarray:
    """lambda_max [K] of each member's training loss Hessian (NaN where the weights have blown
    up: nothing to measure), the weights as train_epochs takes them, units [K] the real widths."""
    inputs = w1.shape[1]
    sizes = (inputs + 2) * units + 1
    out = np.zeros((len(units), int(sizes.max(initial=1)), int(sizes.max(initial=1))))
    hessians(w1, b1, wo, bo, units, x, y, act, out)
    top = np.full(len(units), np.nan)
    for size in np.unique(sizes):  # one LAPACK call per matrix size
        rows = np.flatnonzero(sizes == size)
        block = out[rows, :size, :size]
        ok = np.isfinite(block).all(axis=(1, 2))
        if ok.any():
            top[rows[ok]] = np.linalg.eigvalsh(block[ok])[:, -1]
    return top.astype(np.float32)
