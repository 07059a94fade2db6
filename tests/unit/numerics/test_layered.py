"""Invariants of the layered product against exact rational references."""
from fractions import Fraction

import numpy as np
import pytest
from exact import datasets, exact_matmul, max_abs_error, rounded

from lrmpi import LayeredMatmul, layered_matmul
from lrmpi.numerics import planes
from lrmpi.numerics.schedule import ORDERS

DATA = sorted(datasets(np.random.default_rng(1)))


def _quantized(lm):
    ea, eb = lm.encode()
    return ea, eb


@pytest.mark.parametrize("name", DATA)
@pytest.mark.parametrize("order", ORDERS)
def test_final_is_the_correctly_rounded_exact_product_of_the_quantized_operands(name, order):
    A, B = datasets(np.random.default_rng(1))[name]
    lm = LayeredMatmul(A, B, planes=3, order=order)
    ea, eb = lm.encode()
    Aq, Bq = planes.dequantize(ea), planes.dequantize(eb).T
    *_, last = lm
    assert last.index == lm.planned
    want = rounded(exact_matmul(Aq, Bq))
    if last.fallback:  # entries the planes cannot carry: recomputed from A and B
        rows, cols = last.fallback
        assert name in ("span_1e-30_1e30", "wide_rows_cols"), name
        exact = exact_matmul(A, B)
        for i, j in zip(rows, cols):
            assert abs(Fraction(float(last.C[i, j])) - exact[i, j]) <= last.bound_abs
        want[rows, cols] = last.C[rows, cols]
    np.testing.assert_array_equal(last.C, want)


@pytest.mark.parametrize("name", DATA)
def test_lshape_resolution_r_is_the_product_of_operands_truncated_to_r_planes(name):
    A, B = datasets(np.random.default_rng(2))[name]
    lm = LayeredMatmul(A, B, planes=4, order="lshape")
    ea, eb = lm.encode()
    for res in lm:
        Ar = planes.dequantize(ea, res.index)
        Br = planes.dequantize(eb, res.index).T
        np.testing.assert_array_equal(res.C, rounded(exact_matmul(Ar, Br)),
                                      err_msg=f"resolution {res.index}")


@pytest.mark.parametrize("name", DATA)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("scale", ["row", "tensor"])
def test_bounds_hold_against_the_exact_product_and_never_increase(name, order, scale):
    A, B = datasets(np.random.default_rng(3))[name]
    exact = exact_matmul(A, B)
    emax = float(max(abs(x) for x in exact.ravel()))
    prev_abs, prev_rel = np.inf, np.inf
    for res in layered_matmul(A, B, planes=3, order=order, scale=scale):
        err = max_abs_error(res.C, exact)
        assert res.bound_abs >= err, f"resolution {res.index}: bound {res.bound_abs} < {float(err)}"
        if emax > 0:
            assert res.bound_rel >= float(err) / emax * (1 - 1e-12)
        assert res.bound_abs <= prev_abs and res.bound_rel <= prev_rel
        prev_abs, prev_rel = res.bound_abs, res.bound_rel


def test_cutoff_skips_low_pairs_but_keeps_them_in_the_bound(rng):
    A, B = rng.standard_normal((6, 8)), rng.standard_normal((8, 5))
    exact = exact_matmul(A, B)
    out = list(layered_matmul(A, B, planes=4, cutoff=3))
    assert [r.pairs for r in out] == [1, 3, 6]
    for r in out:
        assert r.bound_abs >= max_abs_error(r.C, exact)


def test_resolution_fields(rng):
    A, B = rng.standard_normal((5, 4)), rng.standard_normal((4, 3))
    out = list(layered_matmul(A, B, planes=2, order="pairwise"))
    assert [r.index for r in out] == [1, 2, 3, 4]
    assert [r.pairs for r in out] == [1, 2, 3, 4]
    assert all(r.planned == 4 for r in out)
    assert all(b.elapsed >= a.elapsed for a, b in zip(out, out[1:]))
    assert out[-1].C.shape == (5, 3) and out[-1].C.dtype == np.float64


def test_accuracy_reaches_float64_with_enough_planes(rng):
    A, B = rng.standard_normal((40, 60)), rng.standard_normal((60, 30))
    *_, last = layered_matmul(A, B, planes=8)
    assert last.bound_rel < 1e-13
    np.testing.assert_allclose(last.C, A @ B, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [133_144, 133_145])
def test_inner_dimension_at_and_past_the_int32_limit_is_exact(k):
    # every digit of 1 - 2^-14 is 127 in both planes: the worst case for int32
    x = 1.0 - 2.0**-14
    A = np.full((1, k), x)
    B = np.full((k, 2), -x)
    B[:, 1] = x
    *_, last = layered_matmul(A, B, planes=2, order="pairwise")
    exact = -k * x * x  # k * x^2 is exact in float64 here (k < 2^18, x^2 has 28 bits)
    assert last.C[0, 0] == exact and last.C[0, 1] == -exact
