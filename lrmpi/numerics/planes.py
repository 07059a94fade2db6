"""Digit-plane encoding of an operand. Pure numerics, no MPI.

Each *row* of the array handed to `encode` is one scaling unit: pass A for
per-row scaling of the left operand and B.T for per-column scaling of the right
one (that layout is also what the int8 kernels want: both operands contiguous
along the inner dimension). With exponent e chosen so that max|x| < 2^e,

    x = 2^e * sum_{p=1..s} d_p 2^(-b p) + r,    |d_p| <= 2^b - 1,   |r| < 2^(e - b s)

every digit carries the sign of x (truncation toward zero), so no value wraps
(design.md, "Numbers").
"""
import threading
from dataclasses import dataclass

import numpy as np

from lrmpi.numerics import kernels, validate
from lrmpi.numerics.buffers import drop_pages, release, row_blocks


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


def encode(X, bits=7, planes=4, scale="row", *, exps=None, out=None):
    """Encode the rows of a finite float64 C-contiguous matrix into digit planes
    (into `out`, an int8 (planes, rows, cols) array, if given)."""
    bits, planes = validate.bits(bits), validate.planes(planes)
    if exps is None:
        exps = exponents(X, validate.scale(scale))
    digits, sumsq, l1 = kernels.encode(X, exps, bits, planes, out=out)
    return Encoded(digits, exps, bits, sumsq, l1)


def row_maxima(X, name):
    """max |X[i, :]| of every row (InputError for NaN/Inf naming `name`), by blocks of
    rows whose pages leave the process after them (buffers.drop_pages)."""
    amax = np.empty(X.shape[0])
    for r0, r1 in row_blocks(X):
        part, bad = kernels.rowmax(X[r0:r1])
        validate.finite(bad, name)
        amax[r0:r1] = part
        drop_pages(X, r0, r1)
    return amax


def column_maxima(B):
    """max |B[:, j]| of every column (InputError for NaN/Inf), by blocks of rows as
    row_maxima."""
    amax = np.zeros(B.shape[1])
    for r0, r1 in row_blocks(B):
        part, bad = kernels.colmax(B[r0:r1])
        validate.finite(bad, "B")
        np.maximum(amax, part, out=amax)
        drop_pages(B, r0, r1)
    return amax


def encode_columns(B, bits=7, planes=4, scale="row", *, amax=None):
    """Encode the columns of B (k x n) as the rows of B.T, without forming B.T
    (kernels.encode_t: blocks of 32 x 32 transposed in L1; a float64 copy of B.T
    would cost its first touch alone, ~0.3 s at n = 4096 on these machines).
    `amax`: column_maxima(B), if known."""
    bits, planes = validate.bits(bits), validate.planes(planes)
    if amax is None:
        amax = column_maxima(B)
    if validate.scale(scale) == "tensor":
        amax = np.full_like(amax, amax.max() if amax.size else 0.0)
    exps = np.frexp(amax)[1].astype(np.int32)
    # by blocks of rows whose pages leave after them: a mapped B never counts whole in
    # the root's memory (one call over all rows maps every page: n = 4096, 128 MB)
    D, sumsq, l1 = kernels.encode_t(B, exps, bits, planes, blocks=row_blocks(B),
                                    done=lambda r0, r1: drop_pages(B, r0, r1))
    return Encoded(D, exps, bits, sumsq, l1)


class RowBlocks:
    """An operand whose rows are encoded block by block (`blocks`: [(r0, r1)]), in
    order, on a thread of its own: the first blocks are ready, and their tasks
    computing, while the later ones are encoded. Its exponents `exps` are known for
    every row beforehand (exponents(): one pass, with the NaN/Inf check). Like an
    Encoded for exps, bits, planes and shape; `sumsq` and `l1` wait for every block;
    block(b) waits for block b's digits, (planes, r1 - r0, k) int8. `timed(what)`:
    a context manager the encoding of each block runs in (stage figures)."""

    def __init__(self, X, exps, bits, planes, blocks, timed=None):
        m, k = X.shape
        self.X, self.exps, self.bits, self.blocks = X, exps, bits, list(blocks)
        self.shape, self._planes = (m, k), planes
        self._sumsq, self._l1 = np.zeros((planes, m), np.int64), np.zeros(m)
        self.parts, self.error = [None] * len(self.blocks), None
        self._cond = threading.Condition()
        self._timed = timed
        self._thread = threading.Thread(target=self._run, name="lrmpi-encode", daemon=True)
        self._thread.start()

    @property
    def planes(self):
        return self._planes

    def _run(self):
        try:
            for b, (r0, r1) in enumerate(self.blocks):
                if self._timed is None:
                    D = self._encode(r0, r1)
                else:
                    with self._timed("encode"):
                        D = self._encode(r0, r1)
                with self._cond:
                    self.parts[b] = D
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - raised where a block is asked for
            with self._cond:
                self.error = exc
                self._cond.notify_all()

    def _encode(self, r0, r1):
        D, sumsq, l1 = kernels.encode(self.X[r0:r1], self.exps[r0:r1], self.bits,
                                      self._planes)
        drop_pages(self.X, r0, r1)
        self._sumsq[:, r0:r1], self._l1[r0:r1] = sumsq, l1
        return D

    def block(self, b):
        """Block b's digit planes (waits until they are encoded)."""
        with self._cond:
            while self.parts[b] is None:
                if self.error is not None:
                    raise self.error
                self._cond.wait(0.1)
        return self.parts[b]

    def wait(self):
        """Every block encoded (re-raises what encoding raised)."""
        for b in range(len(self.blocks)):
            self.block(b)
        return self

    @property
    def sumsq(self):
        return self.wait()._sumsq

    @property
    def l1(self):
        return self.wait()._l1


def release_plane(enc, p):
    """Give back the memory of plane p (1-based) of an encoded operand (Encoded or
    RowBlocks) once no resolution multiplies it (buffers.release: it reads as zeros
    after): A's first planes on the root, during the later resolutions."""
    parts = [enc.block(b) for b in range(len(enc.blocks))] if isinstance(enc, RowBlocks) \
        else [enc.digits]
    for D in parts:
        release(D[p - 1])


def last_uses(schedule):
    """{resolution index: [planes of A whose last resolution it is]} of a schedule
    (a list of resolutions, each a list of pairs (p, q) of planes)."""
    last = {}
    for r, pairs in enumerate(schedule):
        for p, _ in pairs:
            last[p] = r
    out = {}
    for p, r in sorted(last.items()):
        out.setdefault(r, []).append(p)
    return out


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
