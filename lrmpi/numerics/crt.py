"""The CRT resolution (Ozaki scheme II): C = A B to float64 grade from N int8 GEMMs.

Pure numerics over the kernels; no MPI here. The digit planes give early layers
whose cost grows with the square of the accuracy; this is the jump at the end
(nothing until every modulus is in).

    A'[i,:] = trunc(A[i,:] 2^ea[i]), B'[:,j] = trunc(B[:,j] 2^eb[j])   (integers)
        with ||A'[i,:]||_2 <= 2^T and ||B'[:,j]||_2 <= 2^T, so by Cauchy-Schwarz
        |A' B'| < 2^(2T) <= M/2, M = m_1 ... m_N (pairwise coprime odd moduli <= 255)
    for each modulus m_l: residues of A' and B' in [-127, 127] (int8), one exact
        int8 GEMM (int32 sums; k cut at kmax so no sum overflows), reduced mod m_l
    N = A'B' recovered exactly from its residues by the CRT (crt.c: 128-bit
        integers), C = fl(N) 2^-(ea[i] + eb[j]): one rounding per entry.

Error (docs/design.md, "CRT resolution"): the truncations only, |A - A'2^-ea| <
2^-ea per entry, so per entry
    |C - AB| <= 2^-(ea[i]+eb[j]) (|A'[i,:]|_1 + |B'[:,j]|_1 + k) + u|C| + 2^-1074
(the last term: a result below the normal range). M < 2^127 keeps N within one
signed 128-bit integer: at most MAX_MODULI moduli.
"""
import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lrmpi._ext import kernels as _k
from lrmpi.errors import ConfigError
from lrmpi.numerics import kernels
from lrmpi.numerics.buffers import big_empty

U = 2.0 ** -53
ROW_BLOCK = 256  # rows of C per reconstruction block: N int32 tiles of this many rows


def _coprime_odd_moduli(top=255):
    """Odd pairwise coprime moduli <= top, largest first (255 = 3*5*17, 253, 251, ...)."""
    out = []
    for m in range(top, 2, -2):
        if all(math.gcd(m, x) == 1 for x in out):
            out.append(m)
    return tuple(out)


ALL_MODULI = _coprime_odd_moduli()
MAX_MODULI = max(n for n in range(1, len(ALL_MODULI) + 1)
                 if math.prod(ALL_MODULI[:n]) < 2 ** 127)
# int8 GEMM speed over numpy's float64 GEMM per core, measured by `lrmpi bench
# kernels` (docs/platform.md): what the layers plus the CRT cost against one
# float64 product on this ISA.
INT8_OVER_F64 = {"ref": 0.05, "avx2": 1.65, "avx512": 8.0, "amx": 22.0}


def cost_vs_float64(products, isa):
    """Time of `products` int8 GEMMs over one float64 GEMM of the same shape (estimate)."""
    return products / INT8_OVER_F64.get(isa, 1.0)


@dataclass(frozen=True)
class Plan:
    """The moduli of a CRT resolution and the constants of its reconstruction."""

    moduli: tuple
    M: int
    T: int               # each scaled row/column has 2-norm <= 2^T

    @property
    def count(self):
        return len(self.moduli)

    @functools.cached_property
    def constants(self):
        """(moduli int32, coef uint64 (N, 2) low word first, M as two uint64 words):
        computed once per plan (every row block reads them)."""
        coef = []
        for m in self.moduli:
            Mi = self.M // m
            coef.append(Mi * pow(Mi, -1, m) % self.M)
        words = np.array([[c & (2 ** 64 - 1), c >> 64] for c in coef], np.uint64)
        return (np.array(self.moduli, np.int32), words.reshape(-1),
                np.array([self.M & (2 ** 64 - 1), self.M >> 64], np.uint64))


def plan(count):
    """The plan with `count` moduli (1..MAX_MODULI)."""
    if not isinstance(count, (int, np.integer)) or not 1 <= count <= MAX_MODULI:
        raise ConfigError(f"moduli must be an integer in 1..{MAX_MODULI} (their product "
                          f"must stay below 2^127), got {count!r}")
    mods = ALL_MODULI[:count]
    M = math.prod(mods)
    return Plan(mods, M, (M.bit_length() - 2) // 2)


BLOCK = 128  # rows of X per block of the norms' pass (its temporaries stay in cache)


def unit_stats(X, axis):
    """Per row (axis=1) or column (axis=0) of X, in one blocked pass (no copy of X):
    (amax, ea with amax < 2^ea, nrm >= ||X_unit 2^-ea||_2 rounded up past its
    rounding error, l1 = sum |X_unit|, whether X holds NaN or Inf)."""
    k = X.shape[axis]
    amax, bad = (kernels.rowmax if axis == 1 else kernels.colmax)(X)
    _, ea = np.frexp(amax)                       # amax < 2^ea
    # ldexp of X itself: 2^-ea alone overflows for a subnormal row (ea < -1023)
    neg = (-ea).astype(np.int32)
    ss = np.zeros(X.shape[1 - axis])
    l1 = np.zeros(X.shape[1 - axis])
    for i0 in range(0, X.shape[0], BLOCK):
        Xb = X[i0:i0 + BLOCK]
        with np.errstate(over="ignore"):  # 1-norms beyond float64: inf (no bound a priori)
            l1[i0:i0 + BLOCK] = np.abs(Xb).sum(axis=1) if axis == 1 else 0.0
            if axis == 0:
                l1 += np.abs(Xb).sum(axis=0)
        if axis == 1:
            Xs = np.ldexp(Xb, neg[i0:i0 + BLOCK, None])
            ss[i0:i0 + BLOCK] = np.einsum("ij,ij->i", Xs, Xs)
        else:
            Xs = np.ldexp(Xb, neg[None, :])
            ss += np.einsum("ij,ij->j", Xs, Xs)
    nrm = np.sqrt(ss) * (1.0 + (k + 4) * U) + 2.0 ** -1000   # >= the true scaled norm
    return amax, ea, nrm, l1, bad


def exponents(X, T, axis, stats=None):
    """Per row (axis=1) or column (axis=0) of X: e with ||X 2^e||_2 <= 2^T, 0 for
    zero rows. The norm is taken of X scaled by a power of two (no overflow) and
    rounded up past its rounding error (`stats`: unit_stats(X, axis) if known)."""
    amax, ea, nrm = (stats if stats is not None else unit_stats(X, axis))[:3]
    _, en = np.frexp(nrm)                        # ||X s|| < 2^en
    e = T - en - ea                              # ||X 2^e|| < 2^(en + T - en) = 2^T
    return np.where(amax > 0, e, 0).astype(np.int32)


@dataclass
class Operands:
    """The residues of A's rows and B's columns, and what the bound needs."""

    plan: Plan
    ea: np.ndarray       # int32 (m,)
    eb: np.ndarray       # int32 (n,)
    RA: np.ndarray       # int8 (N, m, k)
    RB: np.ndarray       # int8 (N, n, k): B's columns as rows
    l1a: np.ndarray      # int64 (m,): sum |A'[i,:]|
    l1b: np.ndarray      # int64 (n,)
    k_: int = 0          # the inner dimension, when RA is None (crt.scaling)

    @property
    def k(self):
        return self.RA.shape[2] if self.RA is not None else self.k_


def residues(A, B, pl, stats=(None, None)):
    """Scale A's rows and B's columns and take their residues (Operands); `stats`:
    unit_stats of A's rows and B's columns if known."""
    m, k = A.shape
    n = B.shape[1]
    ea, eb = exponents(A, pl.T, 1, stats[0]), exponents(B, pl.T, 0, stats[1])
    mods, _, _ = pl.constants
    RA = np.empty((pl.count, m, k), np.int8)
    RB = np.empty((pl.count, n, k), np.int8)
    l1a, l1b = np.empty(m, np.int64), np.empty(n, np.int64)
    with ThreadPoolExecutor(1) as pool:  # the kernels release the GIL: both at once
        fut = pool.submit(_k.crt_residues, B, 1, eb, mods, RB, l1b)
        _k.crt_residues(np.asarray(A, np.float64), 0, ea, mods, RA, l1a)
        fut.result()
    return Operands(pl, ea, eb, RA, RB, l1a, l1b)


def scaling(A, B, pl, stats=(None, None)):
    """The Operands of A and B without their residues (RA, RB None): the exponents and
    l1 norms the bound needs, where the residues are taken block by block by the
    ranks that multiply them (unit_residues). `stats`: as for residues."""
    ea, eb = exponents(A, pl.T, 1, stats[0]), exponents(B, pl.T, 0, stats[1])
    l1a, l1b = np.empty(A.shape[0], np.int64), np.empty(B.shape[1], np.int64)
    with ThreadPoolExecutor(1) as pool:  # the kernels release the GIL: both at once
        fut = pool.submit(_k.crt_residues, B, 1, eb, np.zeros(0, np.int32), None, l1b)
        _k.crt_residues(np.asarray(A, np.float64), 0, ea, np.zeros(0, np.int32), None, l1a)
        fut.result()
    return Operands(pl, ea, eb, None, None, l1a, l1b, A.shape[1])


def unit_residues(X, axis, exps, pl, out=None):
    """The residues of X's rows (axis=1: X is (rows, k)) or columns (axis=0: X is
    (k, cols), any strides) scaled by 2^exps, modulo each modulus of `pl`: (N, units, k)
    int8, into `out` if given."""
    units, k = (X.shape[0], X.shape[1]) if axis == 1 else (X.shape[1], X.shape[0])
    if out is None:
        out = big_empty((pl.count, units, k), np.int8)
    mods, _, _ = pl.constants
    _k.crt_residues(X, 0 if axis == 1 else 1, np.ascontiguousarray(exps, np.int32), mods, out,
                    np.empty(units, np.int64))
    return out


def product_tile(pl, RA, RB, ea, eb, C, S, isa=None):
    """C := the CRT product of one tile: RA[l] (rows, k) and RB[l] (cols, k) are the
    residues of its A rows and B columns for modulus l (any sequence or mapping
    indexed 0..N-1), ea/eb their exponents, C a float64 (rows, cols) view, S an
    int32 scratch of shape (N, rows, cols). Returns max |C|. Exact sums, so the
    result does not depend on how C is cut into tiles."""
    km = kernels.kmax(7)  # residues are at most 127 in magnitude
    k = RA[0].shape[1]
    for l, mod in enumerate(pl.moduli):
        if k <= km:  # S[l] set by the product: no fill
            kernels.igemm(RA[l], RB[l], S[l], isa=isa, accumulate=False)
            continue
        S[l].fill(0)
        P = np.empty_like(S[l])
        for k0 in range(0, k, km):  # reduce each exact partial sum before the next
            kernels.igemm(RA[l][:, k0:k0 + km], RB[l][:, k0:k0 + km], P, isa=isa,
                          accumulate=False)
            S[l] += np.remainder(P, mod).astype(np.int32)
            np.remainder(S[l], mod, out=S[l])
    mods, coef, Mw = pl.constants
    return _k.crt_reconstruct(mods, S, coef, Mw, np.ascontiguousarray(ea, np.int32),
                              np.ascontiguousarray(eb, np.int32), C)


def product_block(ops, r0, r1, S, C, isa=None):
    """Rows [r0, r1) of C from the residue products: S is an int32 scratch of
    shape (N, r1 - r0, n). Returns max |C[r0:r1]|."""
    return product_tile(ops.plan, ops.RA[:, r0:r1], ops.RB, ops.ea[r0:r1], ops.eb,
                        C[r0:r1], S, isa)


def bound_abs(ops, cmax):
    """Rigorous max_ij |C - AB| (module docstring), as a float rounded up."""
    k = ops.k
    # a zero row or column (l1 = 0: any other has an integer >= 1) contributes
    # no error; its exponent 0 must not enter the maxima below
    sa = np.where(ops.l1a > 0, np.ldexp(1.0, -ops.ea), 0.0)
    sb = np.where(ops.l1b > 0, np.ldexp(1.0, -ops.eb), 0.0)
    up = 1.0 + 2.0 ** -40  # the float products and sums below, and l1's conversion

    def top(x):
        return float(np.max(x, initial=0.0))
    ma, mb = top(sa), top(sb)
    with np.errstate(over="ignore"):  # operands near the top of float64: inf, no bound
        t = top(sa * ops.l1a.astype(np.float64)) * mb + \
            ma * top(sb * ops.l1b.astype(np.float64)) + k * ma * mb
        return t * up * up + U * cmax * up + 2.0 ** -1074


def crt_matmul(A, B, count, *, threads=None, should_stop=None, isa=None, with_ops=False):
    """(C, bound_abs, cmax) of A @ B by the CRT with `count` moduli (and its Operands
    `with_ops`), or None when `should_stop()` said so between row blocks. Row blocks
    run on `threads` threads (default: the cores this process may use)."""
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    pl = plan(count)
    ops = residues(A, B, pl)
    m, n = A.shape[0], B.shape[1]
    C = np.empty((m, n))
    blocks = [(r0, min(m, r0 + ROW_BLOCK)) for r0 in range(0, m, ROW_BLOCK)]
    threads = threads or min(len(os.sched_getaffinity(0)), max(1, len(blocks)))

    def run(block_list):
        S, amax = {}, 0.0  # one scratch per block height (the last may be shorter)
        for r0, r1 in block_list:
            if should_stop is not None and should_stop():
                return None
            if r1 - r0 not in S:
                S[r1 - r0] = np.empty((pl.count, r1 - r0, n), np.int32)
            amax = max(amax, product_block(ops, r0, r1, S[r1 - r0], C, isa))
        return amax

    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(run, [blocks[t::threads] for t in range(threads)]))
    if any(p is None for p in parts):
        return None
    cmax = max(parts, default=0.0)
    return (C, bound_abs(ops, cmax), cmax) + ((ops,) if with_ops else ())
