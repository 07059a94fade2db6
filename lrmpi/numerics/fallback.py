"""Entries the digit planes cannot carry, recomputed after the last resolution
(design.md, "Fallback").

Per-row and per-column scaling holds each element to a fixed-point grid of its row
(column): an element far below its row's maximum keeps few bits or none, and an
entry of C that depends on such elements (A = [[1e100, 1], [1, 1]], B = [[1, 1],
[1, 1e100]]: C[0,1] = 2e100, but both 1s are below 16 planes) can be wrong by
100 % while its bound says so. After the last resolution every entry whose
elementwise bound E_ij is worse than what a one-shot product guarantees,

    E_ij > gamma_k(u) (|A| |B|)_ij,   u = max(2^-53, 2^(-b (s - 1))),

(float64's unit roundoff when the planes hold 53 bits or more; one plane of
headroom for elements below their row's maximum otherwise) is recomputed from the
original operands by a compensated dot product (kernels.dot2), whose error is at
most u'|c| + gamma_k^2 |a|.|b|. (|A||B|)_ij is bounded from below by the same
product over a sample of SAMPLE inner indices (a rigorous lower bound: every term
is >= 0), so the test costs an m x n x SAMPLE GEMM besides the bound's own.
"""
import numpy as np

from lrmpi import config
from lrmpi.numerics import kernels
from lrmpi.numerics.buffers import drop_pages, row_blocks

SAMPLE = 64      # inner indices of the lower bound on (|A||B|)_ij
U = 2.0**-53
FLOOR = 2.0**-1060  # below this, an entry is not worth recomputing


def gamma(k, u=U):
    """gamma_k = k u / (1 - k u): the classical bound of a k-term dot product; no
    guarantee at all (inf) once k u >= 1."""
    return k * u / (1 - k * u) if k * u < 1 else float("inf")


def nominal_unit(bits, planes):
    """The unit roundoff the planes nominally carry (see the module docstring)."""
    return max(U, 2.0**(-bits * (planes - 1)))


def apply(A, B, ea, eb, bound, C, bits, planes, unit=None):
    """Recompute, in place in C, the entries of the last resolution the planes cannot
    carry. `bound` = (E_row, block): per row of C an upper bound on its entries'
    elementwise bound, and block(i0, i1) -> that bound on rows i0..i1
    (bounds.Bounds.row_bound and .block; crt_bound.by_row for the CRT resolution, with
    `unit` = float64's: the guarantee is then a float64 product's). A block of rows
    whose bound is below the guarantee of the smallest |A||B| entry in each of its rows
    holds no entry to recompute (the usual case: at n = 8192 the test's ~15 passes over
    C cost the root 1.9 s after the last resolution's products) and takes E_row as its
    bound; the others are tested entry by entry (a NaN in E_row: always). Returns
    (rows, cols, bound_abs): the entries recomputed and the resolution's max-abs bound
    with them."""
    m, k = A.shape
    T = np.unique(np.linspace(0, k - 1, min(k, SAMPLE)).round().astype(np.int64))
    At, Bt = np.empty((m, len(T))), np.empty((len(T), B.shape[1]))
    for i, t in enumerate(T):  # row by row: a mapped B's pages leave again at once
        np.abs(B[t], out=Bt[i])
        drop_pages(B, t, t + 1)
    for r0, r1 in row_blocks(A):  # a mapped A's pages leave again after the sample
        At[r0:r1] = np.abs(A[r0:r1, T])
        drop_pages(A, r0, r1)
    # fl(sum of |T| nonnegative products) <= (1 + gamma_|T|) times the exact sum
    shrink = 1.0 / ((1 + gamma(len(T))) * (1 + 2.0**-50))
    guarantee = gamma(k, unit or nominal_unit(bits, planes))
    # a zero row of A or column of B gives an exact 0 (its bound is only underflow slack)
    live_r, live_c = ea.l1 > 0, eb.l1 > 0
    E_row, block = bound
    rb = config.get().bound_row_block
    rows, cols, worst = [], [], 0.0
    for i0 in range(0, m, rb):
        i1 = min(i0 + rb, m)
        if guarantee == float("inf"):  # the planes promise nothing a product could beat
            worst = max(worst, float(block(i0, i1).max()))
            continue
        with np.errstate(over="ignore"):  # |A||B| beyond float64: inf, nothing to beat
            L = (At[i0:i1] @ Bt) * shrink
            # guarantee * L_ij >= guarantee * min_j L_ij (rounding is monotone), so no
            # entry of a row whose whole bound is below that one is bad
            if np.all(E_row[i0:i1] <= guarantee * L.min(axis=1)):
                worst = max(worst, float(E_row[i0:i1].max()))
                continue
            E = block(i0, i1)
            bad = (E > guarantee * L + FLOOR) & live_r[i0:i1, None] & live_c[None, :]
        if bad.any():
            r, c = np.nonzero(bad)
            rows.append(r + i0)
            cols.append(c)
            E = np.where(bad, 0.0, E)
        worst = max(worst, float(E.max()))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), worst
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    y, s = kernels.dot2(A, B, rows, cols, ea.exps, eb.exps)
    scale = ea.exps[rows].astype(np.int64) + eb.exps[cols].astype(np.int64)
    g2 = gamma(k) ** 2
    # the error in scaled units, inflated for the rounding of this very expression,
    # then scaled back (an overflow gives inf: then C is inf too)
    err = ((U * np.abs(y) + g2 * s) / (1 - U) + k * 2.0**-1070) * (1 + 2.0**-40)
    with np.errstate(over="ignore"):
        C[rows, cols] = np.ldexp(y, scale)
        err = np.ldexp(err, scale) * (1 + 2.0**-50) + 2.0**-1070
    return rows, cols, max(worst, float(err.max()))
