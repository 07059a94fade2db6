"""The CRT resolution's bound: chosen before (the moduli that meet --target), checked
entry by entry after (the fallback), and never worse than the layers' (docs/design.md,
"CRT resolution"). Pure numerics; crt.py has the exact arithmetic.

A priori: with T(N) the scaling of N moduli, every row exponent is e0_i + T (crt.
exponents is linear in T), and |A'_i|_1 <= 2^(e_i) |A_i|_1, so the truncation part of
the bound is at most

    t(T) = (max_i |A_i|_1 max_j 2^-f0_j + max_i 2^-e0_i max_j |B_j|_1) 2^-T
           + k max_i 2^-e0_i max_j 2^-f0_j 2^-2T           (inflated as bound_abs is)

and max|AB| >= L, a rigorous lower bound from a few rows and columns of AB computed
in float64 with their error bound. The reported bound_rel is b / (x - b) with
b = t + u x (x = max|C|, x >= L - b): decreasing in x, so at most its value at the
smallest x. The fewest moduli whose value meets the target are chosen.
"""
import math

import numpy as np

from lrmpi.errors import ConfigError
from lrmpi.numerics import crt, fallback

U = crt.U
UP = 1.0 + 2.0 ** -40
# relative bounds (bound_rel) the named targets ask for: fp64 within 8 units of float64's
# rounding of max |AB| (16 moduli for random k = 1024..2048), fp32 float32's unit roundoff
TARGETS = {"fp64": 2.0 ** -50, "fp32": 2.0 ** -24}


def target_rel(target):
    """The relative bound a target asks for (ConfigError if it is not one)."""
    if isinstance(target, str):
        if target not in TARGETS:
            raise ConfigError(f"target must be one of {', '.join(TARGETS)} or a number, "
                              f"got {target!r}")
        return TARGETS[target]
    rel = float(target)
    if not 0 < rel < 1:
        raise ConfigError(f"target must be in (0, 1), got {target}")
    return rel


class Apriori:
    """What the CRT resolution of A B will report, before computing it: one blocked
    pass over each operand (crt.unit_stats, the same exponents the residues use)."""

    def __init__(self, A, B, stats=(None, None)):
        self.k = k = A.shape[1]
        sa = stats[0] if stats[0] is not None else crt.unit_stats(A, 1)
        sb = stats[1] if stats[1] is not None else crt.unit_stats(B, 0)
        e0, f0 = crt.exponents(A, 0, 1, sa), crt.exponents(B, 0, 0, sb)
        live_a, live_b = sa[0] > 0, sb[0] > 0
        inflate = 1 + 2 * (k + 2) * U
        self.l1a = float(np.max(sa[3], initial=0.0)) * inflate
        self.l1b = float(np.max(sb[3], initial=0.0)) * inflate
        # max 2^-e0 over live rows, as an exponent (2^-e0 may not fit a double)
        self.ea = int(np.max(-e0[live_a], initial=-10**6))
        self.eb = int(np.max(-f0[live_b], initial=-10**6))
        with np.errstate(over="ignore"):  # 2-norms >= |rows|: inf when they do not fit
            na = np.ldexp(sa[2], sa[1].astype(np.int64))
            nb = np.ldexp(sb[2], sb[1].astype(np.int64))
        self.L = lower_max(A, B, sa[3], sb[3], na, nb)

    def trunc(self, T):
        """t(T): the truncation part of bound_abs with T (module docstring)."""
        def ldx(x, e):
            try:
                return math.ldexp(x, e)
            except OverflowError:
                return math.inf
        t = ldx(self.l1a, self.eb - T) + ldx(self.l1b, self.ea - T) + \
            ldx(float(self.k), self.ea + self.eb - 2 * T)
        return t * UP * UP

    def rel(self, count):
        """An upper bound on the bound_rel of the CRT resolution with `count` moduli
        (inf when max |AB| has no positive lower bound here)."""
        t = self.trunc(crt.plan(count).T)
        x = (self.L - t) / (1 + U * UP)
        b = t + U * x * UP + 2.0 ** -1074
        if not x - b > 0 or not math.isfinite(b):
            return math.inf
        return b / (x - b) * (1 + 2.0 ** -50) * UP


def lower_max(A, B, l1a, l1b, na, nb):
    """A rigorous lower bound on max |AB| (0 if none is found): the row of A and the
    column of B with the largest 1-norms (`l1a`, `l1b`), products in float64 minus
    their error, gamma_k ||a||_2 ||b||_2 by Cauchy-Schwarz (`na`, `nb`: 2-norms at
    least). One row and one column: two matrix-vector products (15 ms each at
    n = 4096; a 4-row product took 50 ms), within about 25 % of max |AB| on random
    data, which rarely changes the count of moduli."""
    g = fallback.gamma(A.shape[1]) * (1 + 2.0 ** -50)
    i, j = int(np.argmax(l1a)), int(np.argmax(l1b))
    best = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for P, E in ((A[i] @ B, na[i] * nb), (A @ np.ascontiguousarray(B[:, j]), na * nb[j])):
            lo = (np.abs(P) - g * E) * (1 - 2.0 ** -50)
            lo = lo[np.isfinite(lo)]
            if lo.size:
                best = max(best, float(lo.max()))
    return best


def moduli_for(A, B, target=None, stats=(None, None)):
    """The fewest moduli whose bound is shown a priori to meet `target` ("fp64",
    "fp32" or a relative bound). An explicit target out of reach is a ConfigError
    naming the best bound; without one (fp64 by default) every modulus is used.
    `stats`: crt.unit_stats of A's rows and B's columns, if known."""
    rel = target_rel(target if target is not None else "fp64")
    ap = Apriori(A, B, stats)
    for n in range(1, crt.MAX_MODULI + 1):
        if ap.rel(n) <= rel:
            return n
    if target is None:
        return crt.MAX_MODULI
    best = ap.rel(crt.MAX_MODULI)
    raise ConfigError(f"--target {target}: the CRT resolution's rigorous bound cannot be shown "
                      f"to reach {rel:.1e} for these operands (at best {best:.1e}, with "
                      f"{crt.MAX_MODULI} moduli); ask for less, or choose --moduli")


def by_row(ops, C, cmax):
    """(E_row, block) for fallback.apply: block(i0, i1) -> E >= |C - AB| entry by entry
    on rows i0..i1 (the same terms as crt.bound_abs, not maximised), and per row an
    upper bound on that E as computed (its terms at the columns' maxima, |C| at cmax
    = max |C|, 2^-40 of slack over the roundings)."""
    k = ops.k
    with np.errstate(over="ignore"):  # beyond float64: inf, recomputed or no bound
        sa = np.where(ops.l1a > 0, np.ldexp(1.0, -ops.ea.astype(np.int64)), 0.0)
        sb = np.where(ops.l1b > 0, np.ldexp(1.0, -ops.eb.astype(np.int64)), 0.0)
        xa, xb = sa * ops.l1a.astype(np.float64), sb * ops.l1b.astype(np.float64)
        yb = xb + k * sb

    def terms(a, b, c, y, cabs):
        with np.errstate(over="ignore", invalid="ignore"):
            E = (a * b + c * y) * (UP * UP) + U * UP * cabs + 2.0 ** -1074
        return np.where(np.isnan(E), np.inf, E)

    def block(i0, i1):
        return terms(xa[i0:i1, None], sb[None, :], sa[i0:i1, None], yb[None, :],
                     np.abs(C[i0:i1]))
    row = terms(xa, sb.max(initial=0.0), sa, yb.max(initial=0.0), cmax) * (1 + 2.0 ** -40)
    return row, block


def nominal_unit(pl):
    """The unit roundoff N moduli nominally carry: 2^-T with one 7-bit digit of
    headroom for elements below their row's norm (as fallback.nominal_unit gives the
    planes one plane), never below float64's. Few moduli promise little: only
    entries worse than that are recomputed (not all of them, one dot product each)."""
    return max(U, 2.0 ** -(pl.T - 7))


def finish(lm, ea, eb, ops, C, cmax, layers):
    """The CRT resolution's C (in place) and bound, after its last tile: entries its
    residues cannot carry recomputed (fallback.apply with the guarantee of a product
    in the moduli's nominal precision, float64's at most); and if
    its bound is still not below the last layered resolution's, that resolution's C
    and bound instead: bounds never increase. `ea`, `eb`: the layers' encodings (the
    fallback's scaling), `layers()`: (C, bound_abs, cmax) of the last layered
    resolution. Returns (bound_abs, cmax, (rows, cols) recomputed or (), method)."""
    # numpy's max of C, not the tiles' cmax: a NaN in C makes every row bound inf (its
    # entry is recomputed); no |C| copy (2 GB at n = 16384)
    rows, cols, babs = fallback.apply(lm.A, lm.B, ea, eb,
                                      by_row(ops, C, max(float(C.max()), -float(C.min()))),
                                      C, lm.bits, lm.planes, unit=nominal_unit(ops.plan))
    babs = min(babs, crt.bound_abs(ops, cmax)) if not rows.size else babs
    if rows.size:
        cmax = float(np.abs(C).max())
    Cl, bl, cl = layers()
    if not babs < bl:
        C[...] = Cl
        return float(bl), float(cl), (), "planes"
    return float(babs), cmax, ((rows, cols) if rows.size else ()), "crt"
