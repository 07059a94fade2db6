"""Digit-plane encoding of an operand. Pure numerics, no MPI.

Each *row* of the array handed to `encode` is one scaling unit: pass A for
per-row scaling of the left operand and B.T for per-column scaling of the right
one (that layout is also what the int8 kernels want: both operands contiguous
along the inner dimension). With exponent e chosen so that max|x| < 2^e,

    x = 2^e * sum_{p=1..s} d_p 2^(-b p) + r,    |d_p| <= 2^b - 1,   |r| < 2^(e - b s)

every digit carries the sign of x (truncation toward zero), so no value wraps
(design.md, "Numbers").
"""
from dataclasses import dataclass

import numpy as np

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
    """Encode the columns of B (k x n) as the rows of B.T, without forming B.T
    (kernels.encode_t: blocks of 32 x 32 transposed in L1; a float64 copy of B.T
    would cost its first touch alone, ~0.3 s at n = 4096 on these machines)."""
    bits, planes = validate.bits(bits), validate.planes(planes)
    amax, bad = kernels.colmax(B)
    validate.finite(bad, "B")
    if validate.scale(scale) == "tensor":
        amax = np.full_like(amax, amax.max() if amax.size else 0.0)
    exps = np.frexp(amax)[1].astype(np.int32)
    D, sumsq, l1 = kernels.encode_t(B, exps, bits, planes)
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
