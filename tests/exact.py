"""Exact rational references and the data kinds the invariants are tested on."""
from fractions import Fraction

import numpy as np


def exact_matmul(A, B):
    """A @ B with exact rational entries (object array of Fraction)."""
    Af = [[Fraction(float(x)) for x in row] for row in np.asarray(A, dtype=np.float64)]
    Bf = [[Fraction(float(x)) for x in row] for row in np.asarray(B, dtype=np.float64).T]
    out = np.empty((len(Af), len(Bf)), dtype=object)
    for i, a in enumerate(Af):
        for j, b in enumerate(Bf):
            out[i, j] = sum((x * y for x, y in zip(a, b)), Fraction(0))
    return out


def rounded(F):
    """Correctly rounded float64 of an object array of Fractions."""
    return np.vectorize(float, otypes=[np.float64])(F)


def max_abs_error(C, F):
    """max |C - F| exactly, as a Fraction (C float array, F exact array)."""
    return max(abs(Fraction(float(c)) - f) for c, f in zip(C.ravel(), F.ravel()))


def datasets(rng, m=9, k=13, n=7):
    """Named (A, B) pairs covering the data kinds the invariants must hold on."""
    wide_a = rng.standard_normal((m, k)) * 10.0 ** rng.uniform(-30, 30, (m, 1))
    wide_b = rng.standard_normal((k, n)) * 10.0 ** rng.uniform(-30, 30, (1, n))
    span_a = rng.standard_normal((m, k)) * 10.0 ** rng.uniform(-30, 30, (m, k))
    zero_a = rng.standard_normal((m, k))
    zero_a[2] = 0.0
    zero_b = rng.standard_normal((k, n))
    zero_b[:, 1] = 0.0
    return {
        "normal": (rng.standard_normal((m, k)), rng.standard_normal((k, n))),
        "uniform": (rng.uniform(-1, 1, (m, k)), rng.uniform(0, 5, (k, n))),
        "integer": (rng.integers(-1000, 1000, (m, k)), rng.integers(-7, 8, (k, n))),
        "float32": (rng.standard_normal((m, k)).astype(np.float32),
                    rng.standard_normal((k, n)).astype(np.float32)),
        "zero_rows_cols": (zero_a, zero_b),
        "subnormal": (rng.standard_normal((m, k)) * 1e-310, rng.standard_normal((k, n))),
        "wide_rows_cols": (wide_a, wide_b),
        "span_1e-30_1e30": (span_a, rng.standard_normal((k, n))),
    }
