"""Digit-plane encoding of an operand. Pure numerics, no MPI.

Each *row* of the array handed to `encode` is one scaling unit: pass A for
per-row scaling of the left operand and B.T for per-column scaling of the right
one (that layout is also what the int8 kernels want: both operands contiguous
along the inner dimension). With exponent e chosen so that max|x| < 2^e,

    x = 2^e * sum_{p=1..s} d_p 2^(-b p) + r,    |d_p| <= 2^b - 1,   |r| < 2^(e - b s)

every digit carries the sign of x (truncation toward zero), so no value wraps.
"""
from dataclasses import dataclass

import numpy as np

from lrmpi import config
from lrmpi.numerics import kernels, validate


@dataclass(frozen=True, eq=False)
class Encoded:
    """An operand split into digit planes, rows as scaling units."""

    digits: np.ndarray  # (planes, rows, k) int8, most significant plane first
    exps: np.ndarray    # (rows,) int32: row i is scaled by 2^exps[i]
    bits: int
    sumsq: np.ndarray   # (planes, rows) int64: squared l2 norm of each digit row
    l1: np.ndarray      # (rows,) float64: l1 norm of the row scaled by 2^(bits - exps)

    @property
    def planes(self):
        return self.digits.shape[0]

    @property
    def shape(self):
        return self.digits.shape[1:]


def exponents(X, scale="row", *, amax=None):
    """Per-row (or one shared) exponents e with max|X[i,:]| < 2^e; 0 for zero rows."""
    if amax is None:
        amax, bad = kernels.rowmax(X)
        validate.finite(bad, "operand")
    if scale == "tensor":
        amax = np.full_like(amax, amax.max() if amax.size else 0.0)
    return np.frexp(amax)[1].astype(np.int32)


def encode(X, bits=7, planes=4, scale="row", *, exps=None):
    """Encode the rows of a finite float64 C-contiguous matrix into digit planes."""
    bits, planes = validate.bits(bits), validate.planes(planes)
    if exps is None:
        exps = exponents(X, validate.scale(scale))
    digits, sumsq, l1 = kernels.encode(X, exps, bits, planes)
    return Encoded(digits, exps, bits, sumsq, l1)


def encode_columns(B, bits=7, planes=4, scale="row"):
    """Encode the columns of B (k x n) as the rows of B.T, without forming B.T.

    A block of config.column_block (256) columns at a time is transposed into a
    small reused buffer and encoded from there: no n x k float64 copy, whose first
    touch alone costs ~0.3 s at n = 4096 on these machines. The block is
    transposed in pieces of config.transpose_rows (32) rows of B (64 KB that stay
    in cache): one strided copy of the whole block takes 0.17 s at n = 4096, the
    pieces 0.03 s.
    """
    bits, planes = validate.bits(bits), validate.planes(planes)
    k, n = B.shape
    D = np.empty((planes, n, k), np.int8)
    sumsq = np.empty((planes, n), np.int64)
    l1, exps = np.empty(n), np.empty(n, np.int32)
    shared = None
    if validate.scale(scale) == "tensor":
        amax, _ = kernels.rowmax(B)
        shared = np.frexp(amax.max())[1]
    cb, tr = config.get().column_block, config.get().transpose_rows
    buf = np.empty((min(cb, n), k))
    # the block's digits, reused: a fresh 4 MB array per block (k = 4096) would be
    # first-touched 16 times at n = 4096
    dbuf = np.empty((planes, min(cb, n), k), np.int8)
    for j0 in range(0, n, cb):
        j1 = min(n, j0 + cb)
        t = buf[:j1 - j0]
        for i0 in range(0, k, tr):
            t[:, i0:i0 + tr] = B[i0:i0 + tr, j0:j1].T
        if shared is None:
            e = exponents(t, amax=kernels.rowmax(t)[0])
        else:
            e = np.full(j1 - j0, shared, np.int32)
        d, ss, l = kernels.encode(t, e, bits, planes,
                                  out=dbuf if j1 - j0 == dbuf.shape[1] else None)
        D[:, j0:j1], sumsq[:, j0:j1], l1[j0:j1], exps[j0:j1] = d, ss, l, e
    return Encoded(D, exps, bits, sumsq, l1)


def dequantize(enc, upto=None):
    """The exact float64 value of the first `upto` planes (all by default).

    Exact because the digits are the leading bits of a float64 (at most 53
    significant bits in all), so every partial sum below is representable.
    """
    upto = enc.planes if upto is None else upto
    acc = np.zeros(enc.shape)
    for p in range(upto):
        acc += np.ldexp(enc.digits[p].astype(np.float64), -enc.bits * (p + 1))
    return np.ldexp(acc, enc.exps[:, None])
