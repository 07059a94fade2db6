"""Exact accumulation of pair products and their one rounding to float64.

Pair (p, q) contributes 2^(ea_i + eb_j) 2^(-b(p+q)) P_pq[i,j] to C[i,j]. With s
planes, the integer

    N[i,j] = sum over included pairs of P_pq[i,j] * 2^(b (2s - p - q))

is exact and C[i,j] = N[i,j] 2^(ea_i + eb_j - 2bs). |N| < k 2^(2bs) (every
digit below 2^b in magnitude, the top plane's scaled below 1). While that is
below 2^84 (b = 7: up to 5 planes for k <= 16384, 4 planes for any k up to 2^26)
N is held compactly as F = fl(N) (float64) and E = N - F (int32), 12 bytes an
entry, added and decoded in one pass (ext/c/acc_compact.c); beyond it as
carry-save 32-bit limbs in int64 (kernels.h, acc_add), 8 bytes a limb. Either way
`decode` rounds N once, correctly (to nearest, ties to even) — every resolution's
C is the correctly rounded value of the exact partial sum (design.md, "Numbers").
"""
import math
from dataclasses import dataclass, field

import numpy as np

from lrmpi.numerics import kernels
from lrmpi.numerics.buffers import big_zeros

LIMB_BITS = 32


def level_shift(bits, planes, level):
    """Left shift (bits) of a pair of level p+q-1 = `level` inside N."""
    return bits * (2 * planes - 1 - level)


def nlimbs(bits, planes, k):
    """Limbs for |N| < k 2^(2 b s) (+ sign and margin), and for the highest shift's
    limb and the one above it that acc_add writes."""
    nbits = 2 * bits * planes + math.ceil(math.log2(max(k, 2))) + 2
    top_shift = level_shift(bits, planes, 1)
    return max(-(-nbits // LIMB_BITS), top_shift // LIMB_BITS + 2)


COMPACT_BITS = 84  # |N| below 2^84: the compact state is exact (acc_compact.c)


def compact_fits(bits, planes, k):
    """True if |N| < k 2^(2 b s) stays below 2^COMPACT_BITS."""
    return 2 * bits * planes + math.log2(max(k, 1)) < COMPACT_BITS


def scaling_is_exact(dtype, erow, ecol, base):
    """True if S 2^(erow_i + base) and then 2^ecol_j are exact for every |S| below
    2^31 (int32) or 2^53 (int64): every intermediate is a normal double (or 0)."""
    bits = 31 if np.dtype(dtype) == np.int32 else 53
    r0, r1 = int(erow.min()) + base, int(erow.max()) + base
    c0, c1 = int(ecol.min()), int(ecol.max())
    # a nonzero integer |x| < 2^bits times 2^e is normal if -1022 <= e and e + bits <= 1024
    # (one bit of margin kept)
    return -1022 <= min(r0, r0 + c0, c0) and max(r1, r1 + c1, c1) + bits <= 1023


class ExactAccumulator:
    """Exact sums of pair products for an m x n block of C: compact (F, E) when
    compact_fits (unless `compact=False`), else multi-limb."""

    def __init__(self, m, n, bits, planes, k, compact=None):
        self.bits, self.planes = bits, planes
        self.compact = compact_fits(bits, planes, k) if compact is None else compact
        if self.compact:
            self.F, self.E = big_zeros((m, n), np.float64), big_zeros((m, n), np.int32)
        else:
            self.limbs = big_zeros((nlimbs(bits, planes, k), m, n), np.int64)

    @property
    def state(self):
        """The arrays that hold N (to fault in ahead of use)."""
        return [self.F, self.E] if self.compact else [self.limbs]

    def add(self, S, level, row0=0, col0=0):
        """N[row0:, col0:] += S * 2^shift for a level sum S (int32 or int64: |S| < 2^40)."""
        shift = level_shift(self.bits, self.planes, level)
        if self.compact:
            kernels.acc_update(self.F, self.E, S, shift, row0=row0, col0=col0)
        else:
            kernels.acc_add(self.limbs, S, shift, row0, col0)

    def decode(self, erow, ecol, out=None, row0=0, col0=0, with_max=False):
        """C = fl(N * 2^(erow_i + ecol_j - 2bs)), one correct rounding per element
        (all of it, or the tile of `out`'s shape at (row0, col0)); with `with_max`,
        (C, max |C|)."""
        base = -2 * self.bits * self.planes
        if not self.compact:
            return kernels.decode(self.limbs, erow, ecol, base, out=out, row0=row0,
                                  col0=col0, with_max=with_max)
        if out is None:
            out = np.empty(self.F.shape)
        amax = kernels.acc_update(self.F, self.E, None, 0, erow, ecol, base, out=out,
                                  row0=row0, col0=col0)
        return (out, amax) if with_max else out

    def add_decode(self, sums, erow, ecol, out, row0=0, col0=0):
        """add() each (level, S) of `sums`, then decode the tile into `out`; returns
        max |out|. Compact: the last sum is added and the tile decoded in one pass."""
        if not self.compact or not sums:
            for level, S in sums:
                self.add(S, level, row0, col0)
            return self.decode(erow, ecol, out=out, row0=row0, col0=col0, with_max=True)[1]
        for level, S in sums[:-1]:
            self.add(S, level, row0, col0)
        level, S = sums[-1]
        return kernels.acc_update(self.F, self.E, S, level_shift(self.bits, self.planes, level),
                                  erow, ecol, -2 * self.bits * self.planes, out=out,
                                  row0=row0, col0=col0)

    def sum_is_decoded_exactly(self, dtype, level, erow, ecol):
        """True if decode_sum of a level sum of `dtype` is exact for these exponents:
        then the sum is C 2^-(its scale) again (sum_from_decoded) and need not be kept."""
        base = level_shift(self.bits, self.planes, level) - 2 * self.bits * self.planes
        return scaling_is_exact(dtype, erow, ecol, base)

    def sum_from_decoded(self, C, level, erow, ecol, dtype):
        """The level sum S with C = decode_sum(S, ...) when sum_is_decoded_exactly:
        two exact multiplications by powers of two, and an exact conversion."""
        base = level_shift(self.bits, self.planes, level) - 2 * self.bits * self.planes
        S = C * np.ldexp(1.0, -(erow.astype(np.int64) + base))[:, None]
        S *= np.ldexp(1.0, -ecol.astype(np.int64))[None, :]
        return S.astype(dtype)

    def decode_sum(self, S, level, erow, ecol, out=None):
        """fl(S 2^shift(level) 2^(erow_i + ecol_j - 2bs)) without the state: C of a
        first resolution (N = 0 + one level sum) straight from its level sum.

        S (int32 or int64 with |S| < 2^53) converts to float64 exactly. With the
        compact state's kernel, from a zero state not stored (3.5 ms a 512 x 4096
        tile); else, when every product stays a normal number, S 2^(erow+base) 2^ecol
        is two exact multiplications by powers of two, otherwise np.ldexp rounds once
        (subnormals, overflow). Either way this equals decode() after add(S, level)
        bit for bit, without touching the state — hundreds of MB whose first touch
        would delay resolution 1.
        """
        if S.dtype == np.int64 and S.size and np.abs(S).max() >= 2**53:
            raise ValueError("level sum too large for the direct decode")
        shift = level_shift(self.bits, self.planes, level)
        base = shift - 2 * self.bits * self.planes
        if out is None:
            out = np.empty(S.shape)
        if not S.size:
            return out
        if self.compact:  # |S 2^shift| < 2^84 here (compact_fits)
            kernels.acc_update(None, None, S, shift, erow, ecol, -2 * self.bits * self.planes,
                               out=out)
            return out
        if scaling_is_exact(S.dtype, erow, ecol, base):
            np.multiply(S, np.ldexp(1.0, erow.astype(np.int64) + base)[:, None], out=out)
            out *= np.ldexp(1.0, ecol.astype(np.int64))[None, :]
            return out
        e = erow.astype(np.int64)[:, None] + ecol.astype(np.int64)[None, :] + base
        with np.errstate(over="ignore", under="ignore"):  # +-Inf and 0, as decode()
            return np.ldexp(S, np.clip(e, -4000, 4000).astype(np.int32), out=out)


class Streamed:
    """A resolution's level sums handed to the checkpoint tile by tile (its writer's
    write_sums) rather than as TileSums: the writer only seals their file."""


STREAMED = Streamed()


@dataclass
class TileSums:
    """The exact level sums one resolution added to a matmul, tile by tile: its
    resume data (jobs.checkpoint writes and reads them)."""

    levels: list          # level numbers p+q-1, ascending (schedule.levels)
    shape: tuple          # (m, n) of C
    dtype: np.dtype       # int32 or int64
    tiles: list = field(default_factory=list)  # [(r0, c0, [S per level])]

    @property
    def nbytes(self):
        return len(self.levels) * self.shape[0] * self.shape[1] * np.dtype(self.dtype).itemsize
