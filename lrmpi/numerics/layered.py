"""Layered matmul in one process: the Python API, and the tile computation that
MPI workers reuse. Pure numerics over the kernels; no MPI here.

    A (m x k) --encode rows--> planes A_1..A_s  (int8, exps per row)
    B (k x n) --encode rows of B.T--> planes B_1..B_s (int8, exps per column)
    for each resolution r: level sums S_l = sum_{p+q-1=l} A_p B_q^T (exact int64)
                           N += S_l 2^shift(l)       (exact multi-limb integers)
                           C_r = fl(N 2^(ea+eb-2bs)) (one correct rounding)
"""
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lrmpi.log import logger
from lrmpi.errors import ConfigError
from lrmpi.numerics import bounds, crt, crt_bound, fallback, kernels, schedule, validate
from lrmpi.numerics import planes as planes_mod
from lrmpi.numerics.accumulate import ExactAccumulator


@dataclass(frozen=True, eq=False)
class Resolution:
    """One finished resolution of a layered product."""

    index: int        # 1-based resolution number
    planned: int      # number of resolutions planned
    C: np.ndarray     # the result at this resolution (float64)
    bound_abs: float  # rigorous bound on max |C - A B|
    bound_rel: float  # rigorous bound on max |C - A B| / max |A B|
    pairs: int        # pair products included so far
    elapsed: float    # seconds since the computation started
    fallback: tuple = ()  # (rows, cols) of the entries recomputed because the planes (or
                          # the residues) could not carry them (fallback.py): the last layered
                          # resolution and the CRT one
    method: str = "planes"  # "planes", or "crt" for the CRT resolution (crt.py); "planes"
                            # there too when it did not improve on the layers (crt_bound.py)
    products: int = 0       # int8 products (pairs of planes, or moduli) of this resolution


# --- tile computation (shared with MPI workers) ---

def _levels(pairs):
    groups = {}
    for p, q in pairs:
        groups.setdefault(p + q - 1, []).append((p, q))
    return groups


def sum_dtype(pairs, k, bits):
    """int32 if every level sum of `pairs` fits int32 by construction, else int64.

    A level with g pairs sums g*k digit products of at most (2^bits - 1)^2 each:
    with g*k <= kmax(bits) it cannot overflow int32 (k = 4096, 4 planes: 16 384
    products against 133 144), and then tiles travel and are added as int32 —
    half the bytes of int64.
    """
    g = max(len(v) for v in _levels(pairs).values())
    return np.dtype(np.int32 if g * k <= kernels.kmax(bits) else np.int64)


def level_sums(Ap, Bp, pairs, bits, out=None, scratch=None):
    """Exact level sums of one tile: [(level, S)] (rows of A x rows of Bt).

    Ap[p], Bp[q]: plane p of the tile's A rows and plane q of its B.T rows (int8,
    (rows, k); any mapping or sequence indexed by the 1-based plane number).
    S_level = sum over (p, q) in `pairs` with p+q-1 = level of Ap[p] @ Bp[q].T.
    S has dtype sum_dtype(pairs, k, bits). For int32 the kernel accumulates every
    pair straight into S; for int64 the inner dimension is cut so that an int32
    partial sum never holds more than kmax(bits) digit products: it cannot
    overflow, so S is exact. `out`: optional array (levels, rows, cols) of that
    dtype to fill (e.g. a message buffer); `scratch`: optional ScratchPool for
    the int32 partial sums.
    """
    km = kernels.kmax(bits)
    p0, q0 = pairs[0]
    (mt, k), nt = Ap[p0].shape, Bp[q0].shape[0]
    groups = _levels(pairs)
    dtype = sum_dtype(pairs, k, bits)
    if out is None:
        out = np.empty((len(groups), mt, nt), dtype)
    if out.dtype != dtype:
        raise ValueError(f"level sums of these pairs need {dtype}, got {out.dtype}")
    if dtype == np.int32:
        result = []
        for i, level in enumerate(sorted(groups)):
            S = out[i]
            for j, (p, q) in enumerate(groups[level]):  # the first sets S: no fill
                kernels.igemm(Ap[p], Bp[q], S, accumulate=j > 0)
            result.append((level, S))
        return result
    P = scratch.get((mt, nt), np.int32) if scratch is not None else np.empty((mt, nt), np.int32)
    result = []
    for i, level in enumerate(sorted(groups)):
        S = out[i]
        S.fill(0)
        used = 0
        for p, q in groups[level]:
            for k0 in range(0, k, km):
                k1 = min(k, k0 + km)
                if used + (k1 - k0) > km:
                    S += P
                    used = 0
                # the first product after a flush sets P: no fill
                kernels.igemm(Ap[p][:, k0:k1], Bp[q][:, k0:k1], P, accumulate=used > 0)
                used += k1 - k0
        S += P
        result.append((level, S))
    if scratch is not None:
        scratch.put(P)
    return result


class PlaneView:
    """Plane p (1-based) of rows [r0, r1) of an encoded operand, as a mapping."""

    def __init__(self, enc, r0=0, r1=None):
        self.enc, self.r0, self.r1 = enc, r0, enc.shape[0] if r1 is None else r1

    def __getitem__(self, p):
        return self.enc.digits[p - 1, self.r0:self.r1]


# --- the plan and its iterator ---

class LayeredMatmul:
    """C = A @ B in layers of increasing resolution; iterate to get them.

    Parameters
    ----------
    A, B : array_like, 2-D, real, finite
    bits : int, 1..7
        Bits per digit plane (7: every plane is int8 with |digit| <= 127).
    planes : int, 1..16
        Digit planes per operand.
    order : {"antidiagonal", "pairwise", "lshape"}
        How pair products are grouped into resolutions (see lrmpi.schedule).
    cutoff : int, optional
        Keep only pairs of level p+q-1 <= cutoff.
    scale : {"row", "tensor"}
        Power-of-two scale per row of A and column of B, or one per operand.
    final : {None, "crt"}
        After the layers, one more resolution computed by the CRT (crt.py).
    moduli : int, optional
        Moduli of the CRT resolution (1..crt.MAX_MODULI; default: from `target`).
    target : {"fp64", "fp32"} or float
        The a-priori accuracy that picks the number of moduli (default "fp64").
    """

    def __init__(self, A, B, *, bits=7, planes=4, order="antidiagonal", cutoff=None,
                 scale="row", final=None, moduli=None, target=None):
        self.bits = validate.bits(bits)
        self.planes = validate.planes(planes)
        self.scale = validate.scale(scale)
        self.order = order
        self.cutoff = validate.cutoff(cutoff)
        self.schedule = schedule.resolutions(order, self.planes, self.cutoff)
        self.A = validate.operand(A, "A")
        self.B = validate.operand(B, "B")
        validate.shapes(self.A, self.B)
        self.final, self.moduli = validate.final(final), None
        if self.final == "crt" and moduli is not None and target is not None:
            raise ConfigError("moduli and target both choose the CRT resolution's moduli: "
                              "give one of them")
        if self.final != "crt" and (moduli is not None or target is not None):
            raise ConfigError("moduli and target choose the CRT resolution: add final='crt'")
        # one pass over each operand, both at once (the kernels release the GIL; the
        # workers idle until the planes exist): the NaN/Inf check, A's row maxima, and
        # with a CRT resolution the norms that choose its moduli and scale its residues
        crt_stats = self.final == "crt" and moduli is None  # else later, on the scaling's thread
        (self._amax_a, sa), (self._amax_b, sb) = _both(
            lambda: _scan(self.A, "A", 1, crt_stats), lambda: _scan(self.B, "B", 0, crt_stats))
        self.crt_stats = (sa, sb)
        if self.final == "crt":
            self.moduli = crt.plan(moduli).count if moduli is not None else \
                crt_bound.moduli_for(self.A, self.B, target, self.crt_stats)

    @property
    def layers(self):
        """Resolutions made of digit planes (the CRT one, if any, comes after them)."""
        return len(self.schedule)

    @property
    def planned(self):
        return len(self.schedule) + (1 if self.final == "crt" else 0)

    def crt_resolution(self, index, pairs, t0, history, layers, should_stop=None):
        """The CRT resolution as a Resolution (None if `should_stop()` said so).
        `history`: (bound_abs, cmax) of the earlier resolutions, for bound_rel;
        `layers`: (encoded A, encoded B, C of the last layered resolution)."""
        got = crt.crt_matmul(self.A, self.B, self.moduli, should_stop=should_stop,
                             with_ops=True)
        if got is None:
            return None
        C, _, cmax, ops = got
        ea, eb, last = layers
        babs, cmax, redone, method = crt_bound.finish(
            self, ea, eb, ops, C, cmax, lambda: (last, history[0][-1], history[1][-1]))
        rel = bounds.bound_rel([*history[0], babs], [*history[1], cmax])[-1]
        return Resolution(index, self.planned, C, float(babs), float(rel), pairs,
                          time.perf_counter() - t0, redone, method, self.moduli)

    def encode(self):
        """(Encoded A, Encoded B.T): rows of A and columns of B as scaling units."""
        return _both(
            lambda: planes_mod.encode(self.A, self.bits, self.planes, exps=self._exps_a()),
            self._encode_b)

    def encode_streamed(self, blocks, timed=None):
        """(A as planes.RowBlocks of `blocks` [(r0, r1)], encoding on a thread, B's
        Encoded B.T): B whole first (every column's exponent needs all of B), beside
        A's first block; the rest of A follows while its first tiles compute."""
        ea = planes_mod.RowBlocks(self.A, self._exps_a(), self.bits, self.planes, blocks, timed)
        return ea, self._encode_b()

    def _exps_a(self):
        return planes_mod.exponents(self.A, self.scale, amax=self._amax_a)

    def _encode_b(self):
        return planes_mod.encode_columns(self.B, self.bits, self.planes, self.scale,
                                         amax=self._amax_b)

    def __iter__(self):
        t0 = time.perf_counter()
        ea, eb = self.encode()
        bnd = bounds.Bounds(ea, eb, self.schedule)
        acc = ExactAccumulator(ea.shape[0], eb.shape[0], self.bits, self.planes, ea.shape[1])
        cmax, npairs = [], 0
        for r, pairs in enumerate(self.schedule):
            for level, S in level_sums(PlaneView(ea), PlaneView(eb), pairs, self.bits):
                acc.add(S, level)
            C = acc.decode(ea.exps, eb.exps)
            npairs += len(pairs)
            cmax.append(float(np.abs(C).max()))
            babs = bnd.upto(cmax)
            fallback = ()
            if r == self.layers - 1:
                fallback, last = finish_last(self, ea, eb, bnd, C, cmax, babs)
                babs[-1] = last
            rel = bounds.bound_rel(babs, cmax)[-1]
            yield Resolution(r + 1, self.planned, C, float(babs[r]), float(rel), npairs,
                             time.perf_counter() - t0, fallback, "planes", len(pairs))
        if self.final == "crt":
            yield self.crt_resolution(self.planned, npairs, t0, (babs, cmax), (ea, eb, C))


def finish_last(lm, ea, eb, bnd, C, cmax, babs):
    """The last resolution: recompute the entries the planes cannot carry (in C),
    update cmax[-1]; returns ((rows, cols) recomputed, the resolution's bound_abs)."""
    last = lm.layers - 1
    rows, cols, worst = fallback.apply(lm.A, lm.B, ea, eb, (bnd.row_bound(last, cmax[-1]),
                                                            bnd.block(last, C)),
                                       C, lm.bits, lm.planes)
    if rows.size:
        logger.warning("lrmpi: %d entries were beyond the digit planes' reach; recomputed "
                       "by compensated dot products (fallback)", rows.size)
        cmax[-1] = float(np.abs(C).max())
        return (rows, cols), worst
    return (), min(float(babs[-1]), worst)


def _both(f, g):
    """(f(), g()) with g on a second thread: the numpy and kernel calls inside
    release the GIL, so the two run on two cores. f's error wins if both fail
    (A's before B's, as one after the other would report)."""
    with ThreadPoolExecutor(1, thread_name_prefix="lrmpi-encode") as pool:
        fut = pool.submit(g)
        a = f()  # if this raises, leaving the block still waits for g
        return a, fut.result()


def _scan(X, name, axis, stats):
    """(maxima of X's units, crt.unit_stats of them or None) after the NaN/Inf check
    (axis 1: A's rows, 0: B's columns, their scaling units): one pass of unit_stats
    with `stats`, else the maxima alone (planes: by blocks whose pages then leave)."""
    if stats:
        st = crt.unit_stats(X, axis)
        validate.finite(st[4], name)
        return st[0], st
    return (planes_mod.row_maxima(X, name) if axis == 1 else planes_mod.column_maxima(X)), None


def layered_matmul(A, B, **options):
    """Iterate over the resolutions of A @ B (see LayeredMatmul for options)."""
    return iter(LayeredMatmul(A, B, **options))
