"""The fallback's test by rows (bounds.Bounds.row_bound: most blocks of rows of C need
no elementwise pass) decides exactly as the elementwise test, and its bound is never
below the elementwise one."""
import numpy as np
import pytest
from exact import exact_matmul, max_abs_error, rounded

from lrmpi import LayeredMatmul, config
from lrmpi.numerics import fallback, planes
from lrmpi.numerics.bounds import Bounds


def _both(A, B, bits=7, s=4):
    lm = LayeredMatmul(A, B, bits=bits, planes=s)
    ea, eb = lm.encode()
    C0 = rounded(exact_matmul(planes.dequantize(ea), planes.dequantize(eb).T))  # C_last
    bnd = Bounds(ea, eb, lm.schedule)
    last = len(lm.schedule) - 1
    bnd.prepare(last)
    C1, C2 = C0.copy(), C0.copy()
    one = fallback.apply(A, B, ea, eb, _elementwise(bnd.block(last, C1), C1), C1, bits, s)
    two = fallback.apply(A, B, ea, eb, (bnd.row_bound(last, float(np.abs(C0).max())),
                                        bnd.block(last, C2)), C2, bits, s)
    return (C1, one), (C2, two), exact_matmul(A, B)


def _elementwise(block, C):
    """The test entry by entry everywhere: a NaN row bound passes no row."""
    return np.full(len(C), np.nan), block


def _wide(rng, m, k, spread):
    return rng.standard_normal((m, k)) * np.exp(spread * rng.standard_normal((m, k)))


@pytest.mark.parametrize("rows", [1, 3, 32])
@pytest.mark.parametrize("spread", [0.0, 3.0, 12.0])
def test_by_rows_recomputes_the_same_entries(rng, rows, spread):
    A, B = _wide(rng, 70, 40, spread), _wide(rng, 40, 50, spread)
    with config.configure(bound_row_block=rows):
        (C1, (r1, c1, w1)), (C2, (r2, c2, w2)), exact = _both(A, B)
    assert sorted(zip(r1, c1)) == sorted(zip(r2, c2))
    np.testing.assert_array_equal(C1, C2)
    assert w2 >= w1 and w2 >= max_abs_error(C2, exact)
    lm = LayeredMatmul(A, B, bits=7, planes=4)
    ea, eb = lm.encode()
    bnd, last = Bounds(ea, eb, lm.schedule), len(lm.schedule) - 1
    C0 = rounded(exact_matmul(planes.dequantize(ea), planes.dequantize(eb).T))
    E = bnd.block(last, C0)(0, len(C0))
    assert np.all(bnd.row_bound(last, float(np.abs(C0).max())) >= E.max(axis=1))
    Z = np.zeros_like(C0)  # the terms that do not depend on C alone
    assert np.all(bnd.row_bound(last, 0.0) >= bnd.block(last, Z)(0, len(Z)).max(axis=1))
    if spread == 0.0:  # nothing to recompute: the row bound stands, within 2x
        assert r2.size == 0 and w2 <= 2.01 * w1


def test_the_documented_example_still_recomputes():
    A = np.array([[1e100, 1.0], [1.0, 1.0]])
    B = np.array([[1.0, 1.0], [1.0, 1e100]])
    (C1, (r1, c1, _)), (C2, (r2, c2, w2)), exact = _both(A, B)
    assert (0, 1) in set(zip(r2.tolist(), c2.tolist()))
    assert sorted(zip(r1, c1)) == sorted(zip(r2, c2))
    np.testing.assert_array_equal(C1, C2)
    assert w2 >= max_abs_error(C2, exact)


@pytest.mark.parametrize("moduli", [4, 8, 16])
@pytest.mark.parametrize("spread", [0.0, 3.0, 12.0])
def test_the_crt_resolution_by_rows_recomputes_the_same_entries(rng, moduli, spread):
    from lrmpi.numerics import crt, crt_bound
    A, B = _wide(rng, 60, 40, spread), _wide(rng, 40, 45, spread)
    lm = LayeredMatmul(A, B, planes=2)
    ea, eb = lm.encode()
    C0, _, _, ops = crt.crt_matmul(A, B, moduli, with_ops=True)
    unit = crt_bound.nominal_unit(ops.plan)
    C0[7, 3] = np.nan  # a NaN is recomputed either way (its bound is inf)
    C1, C2 = C0.copy(), C0.copy()
    ref = _elementwise(crt_bound.by_row(ops, C1, 0.0)[1], C1)
    r1, c1, w1 = fallback.apply(A, B, ea, eb, ref, C1, lm.bits, lm.planes, unit=unit)
    with config.configure(bound_row_block=8):
        rows = crt_bound.by_row(ops, C2, float(np.abs(C2).max()))
        r2, c2, w2 = fallback.apply(A, B, ea, eb, rows, C2, lm.bits, lm.planes, unit=unit)
    row, block = crt_bound.by_row(ops, C0, float(np.abs(C0).max()))
    E = block(0, len(C0))
    assert np.all(row >= E.max(axis=1)) and np.isinf(row[7])  # the invariant itself
    Z = np.zeros_like(C0)  # the terms that do not depend on C alone
    row, block = crt_bound.by_row(ops, Z, 0.0)
    assert np.all(row >= block(0, len(Z)).max(axis=1))
    assert (7, 3) in set(zip(r2.tolist(), c2.tolist()))
    assert sorted(zip(r1, c1)) == sorted(zip(r2, c2))
    np.testing.assert_array_equal(C1, C2)
    assert w2 >= w1 and w2 >= max_abs_error(C2, exact_matmul(A, B))
