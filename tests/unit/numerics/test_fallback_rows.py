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
    one = fallback.apply(A, B, ea, eb, bnd.blocks(last, C1), C1, bits, s)
    two = fallback.apply(A, B, ea, eb, None, C2, bits, s,
                         by_row=(bnd.row_bound(last, float(np.abs(C0).max())),
                                 bnd.block(last, C2)))
    return (C1, one), (C2, two), exact_matmul(A, B)


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
