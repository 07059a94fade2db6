"""Rigorous a-priori error bounds for every resolution (design.md, "Numbers").

For C_r (the correctly rounded sum of the pairs in resolutions 1..r) and the
exact product AB of the *unquantized* operands, elementwise

  |C_r - AB| <= |sum of omitted pairs| + |A B - Â B̂| + |C_r - exact partial|
     <= sum_{(p,q) omitted} 2^(ea_i+eb_j-b(p+q)) ||a_p[i]||_2 ||b_q[j]||_2   (Cauchy-Schwarz)
      + 2^(ea_i-bs) ||B[:,j]||_1 + ||A[i,:]||_1 2^(eb_j-bs)                  (truncation)
      + 2^-53 (1 + 2^-50) |C_r[i,j]|                                         (one rounding)

where a_p[i] is row i of A's plane p. Factoring out 2^(ea_i + eb_j) leaves
terms in a moderate range, so the first two terms are a small float GEMM
M = X Y^T (inner dimension = omitted pairs + 2) scaled back by ldexp: no factor
can underflow or overflow on the way (_max_scaled). The rounding term needs C_r:
its max is 2^-53 (1 + 2^-50) max|C_r|. Float rounding in these sums is covered by
inflating by (1 + 2^-20) and adding 2^-1070 (subnormal ulps). The reported
sequence is made non-increasing by a running minimum, which stays rigorous: for
t < r, |C_r| <= (1 + u)^2 |C_t| + (Omega_t - Omega_r) (Omega: the omitted pairs'
terms), so bound_t also bounds |C_r - AB|.
"""
import numpy as np

from lrmpi import config

INFLATE = 1.0 + 2.0**-20
ABS_FLOOR = 2.0**-1070
ROUND = 2.0**-53


def _pair_factors(enc):
    """x_p[i] = ||a_p[i]||_2 2^(-b p), for p = 1..s: shape (s, rows)."""
    p = np.arange(1, enc.planes + 1)[:, None]
    return np.sqrt(enc.sumsq.astype(np.float64)) * np.ldexp(1.0, -enc.bits * p)


class Bounds:
    """bound_abs one resolution at a time: each costs an m x n pass (~15 ms at
    n = 4096), so a distributed run computes resolution r's only when r finishes
    instead of all of them before the first task goes out."""

    def __init__(self, ea, eb, schedule):
        self.ea, self.eb, self.schedule = ea, eb, schedule
        self.raw = []
        self._ready = False

    def _setup(self):
        """The factors of every bound, from the operands' norms: on first use (an
        operand encoded block by block has its norms once every block is)."""
        if self._ready:
            return
        ea, eb = self.ea, self.eb
        b, s = ea.bits, ea.planes
        self.xa, self.xb = _pair_factors(ea), _pair_factors(eb)
        k = ea.shape[1]
        trunc = 2.0**(-b * s - b)
        # l1 norms are of rows scaled to (-2^b, 2^b); + k 2^-1000 covers bits that
        # underflowed while scaling (kernels.h, pow2_split)
        la, lb = ea.l1 + k * 2.0**-1000, eb.l1 + k * 2.0**-1000
        # a zero row or column is encoded exactly: no truncation term for it
        self.const_x = [trunc * (ea.l1 > 0), la * trunc]
        self.const_y = [lb, 1.0 * (eb.l1 > 0)]
        included = set()
        self.omitted_after = []
        all_pairs = [(p, q) for p in range(1, s + 1) for q in range(1, s + 1)]
        for res in self.schedule:
            included.update(res)
            self.omitted_after.append([pq for pq in all_pairs if pq not in included])
        self._ready = True

    def _factors(self, r):
        self._setup()
        omitted = self.omitted_after[r]
        X = np.stack(self.const_x + [self.xa[p - 1] for p, _ in omitted], axis=1)
        Y = np.stack(self.const_y + [self.xb[q - 1] for _, q in omitted], axis=1)
        return X, Y

    def prepare(self, r):
        """Compute the part of resolution r's bound that does not need C_r (e.g.
        while the workers wait anyway)."""
        while len(self.raw) <= r:
            X, Y = self._factors(len(self.raw))
            self.raw.append(_max_scaled(X, Y, self.ea.exps, self.eb.exps))

    def upto(self, cmax):
        """Bounds after resolutions 0..len(cmax)-1, given max|C_t| of each: inflated,
        running minimum."""
        r = len(cmax) - 1
        self.prepare(r)
        rounding = ROUND * (1 + 2.0**-50) * np.asarray(cmax, np.float64)
        out = (np.asarray(self.raw[:r + 1]) + rounding) * INFLATE + ABS_FLOOR
        return np.minimum.accumulate(out)

    def block(self, r, C):
        """block(i0, i1): the elementwise bound after resolution r (C: C_r) on rows
        i0..i1, E >= |C_r - AB| (inflated)."""
        X, (erow, emax, Ys, tail) = self._scaled_factors(r)

        def block(i0, i1):
            M = X[i0:i1] @ Ys.T + tail[i0:i1, None]
            e = np.clip(erow[i0:i1] + emax, -2200, 2200)[:, None]
            with np.errstate(over="ignore"):
                E = np.ldexp(M, e) + ROUND * (1 + 2.0**-50) * np.abs(C[i0:i1])
                return E * INFLATE + ABS_FLOOR
        return block

    def row_bound(self, r, cmax):
        """Per row of C, an upper bound on the entries of block()'s E as computed (no m
        x n pass): the factors' GEMM bounded by X times Y's column maxima (all >= 0),
        |C_r| by cmax = max |C_r|, and 2^-40 of slack over the roundings of both."""
        X, (erow, emax, Ys, tail) = self._scaled_factors(r)
        M = X @ Ys.max(axis=0) + tail
        e = np.clip(erow + emax, -2200, 2200)
        with np.errstate(over="ignore"):
            E = np.ldexp(M, e) + ROUND * (1 + 2.0**-50) * cmax
            return (E * INFLATE + ABS_FLOOR) * (1 + 2.0**-40)

    def _scaled_factors(self, r):
        X, Y = self._factors(r)
        return X, _scaled(X, Y, self.ea.exps, self.eb.exps)


def _scaled(X, Y, erow, ecol):
    """(erow, emax, Ys, tail): the column exponents folded into Y (2^(ecol - emax) <=
    1), and per row sum_t X_it 2^-1074, which covers an entry that underflows there;
    the row exponents stay apart (erow + emax, applied by the caller)."""
    ecol = ecol.astype(np.int64)
    emax = int(ecol.max())
    return erow.astype(np.int64), emax, np.ldexp(Y, (ecol - emax)[:, None]), \
        X.sum(axis=1) * 2.0**-1074


def _max_scaled(X, Y, erow, ecol):
    """An upper bound on max_ij ldexp((X Y^T)_ij, erow_i + ecol_j) for X, Y >= 0.

    Column exponents are folded into Y first (2^(ecol - max ecol) <= 1); an
    entry that underflows there loses < 2^-1074, covered per row by adding
    sum_t X_it 2^-1074. Row exponents are applied to the m row maxima only.
    """
    erow, emax, Ys, tail = _scaled(X, Y, erow, ecol)
    rowmax = np.empty(X.shape[0])
    # rows of C per block: the block x n temporary stays in L2 (7 bounds at n = 4096:
    # 0.107 s with 32 rows, 0.144 s with 512)
    rb = config.get().bound_row_block
    for i0 in range(0, X.shape[0], rb):
        rowmax[i0:i0 + rb] = (X[i0:i0 + rb] @ Ys.T).max(axis=1)
    rowmax += tail
    with np.errstate(over="ignore"):  # a product beyond float64: its bound is inf
        return float(np.ldexp(rowmax, np.clip(erow + emax, -2200, 2200)).max())


def bound_rel(bound_abs_seq, cmax_seq):
    """Normwise relative bounds max|C_r - AB| / max|AB| for each resolution so far.

    max|AB| >= max|C_t| - bound_t for every t, so the running maximum of that
    is a rigorous lower bound; inf while it is not positive.
    """
    with np.errstate(invalid="ignore"):  # inf - inf (a product beyond float64): no bound
        lower = np.maximum.accumulate(np.asarray(cmax_seq) - np.asarray(bound_abs_seq))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(lower > 0, np.asarray(bound_abs_seq) / np.where(lower > 0, lower, 1.0),
                       np.inf)
    return rel * (1.0 + 2.0**-50)
