"""The arithmetic the compiled loops share (compiled_epochs.py, compiled_sharpness.py): an exp
that vectorises, the tree sums of network.py, and how a loop is compiled.

Every function here works on float32 as network.py's tensors do, so that a compiled loop gives
the bits a member gives alone, whichever loop (a member's, or a block of members as lanes) runs it.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic

ZERO, ONE, TWO, MINUS_TWO, _HALF = np.float32(0), np.float32(1), np.float32(2), np.float32(-2), np.float32(0.5)


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
    u = ONE + ((s * s) * u + s)
    half = q >> 1
    u = u * _pow2(half) * _pow2(q - half)
    if d < _EXP_LOW:
        u = ZERO
    if d > _EXP_HIGH:
        u = np.float32(np.inf)
    if d != d:
        u = d
    return u


@njit(inline="always", error_model="numpy")
def activate_row(z, width, act):
    """act(z[:width]) in place; tanh as network.py computes it, 1 - 2 / (1 + exp(2z)).
    One loop per activation, so that each is vectorised (over a member's units, or a block's lanes)."""
    if act == 0:
        for j in range(width):
            z[j] = (ONE / (exp32(z[j] * TWO) + ONE)) * MINUS_TWO + ONE
    elif act == 1:
        for j in range(width):
            z[j] = ONE / (exp32(-z[j]) + ONE)
    else:
        for j in range(width):
            z[j] = z[j] if z[j] > ZERO else ZERO


@njit(inline="always", error_model="numpy")
def tree_sum(v, n):
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
def tree_sum_rows(block, n, cols):
    """block[0, :cols] = the sum of rows 0 .. n-1, in tree_sum's order. Overwrites the block."""
    while n > 1:
        half = n // 2
        for i in range(half):
            for c in range(cols):
                block[i, c] = block[i, c] + block[i + half, c]
        if n % 2 == 1:
            for c in range(cols):
                block[half, c] = block[2 * half, c]
        n = half + n % 2


def compile_cached(fn):
    """fn compiled, its machine code cached on disk (beside this file, or in numba's user-wide
    cache where that is read-only); compiled in memory where no cache can be written at all
    (numba raises at decoration then), so a read-only install still trains, ~3 s later.
    nogil: threads each train a part of the members at once (population.py). numba's "numpy"
    error model: x / 0 is inf, as in torch, not an exception (whose check also kept divisions
    from being vectorised)."""
    try:
        return njit(cache=True, error_model="numpy", nogil=True)(fn)
    except RuntimeError:
        return njit(error_model="numpy", nogil=True)(fn)
