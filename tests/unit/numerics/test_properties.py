"""Property tests over shapes (1x1, 1xk, kx1, non-square) and values."""
import numpy as np
from exact import exact_matmul, max_abs_error, rounded
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lrmpi import LayeredMatmul
from lrmpi.numerics import planes
from lrmpi.numerics.schedule import ORDERS

dims = st.integers(1, 9)
values = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def operands(draw):
    m, k, n = draw(dims), draw(dims), draw(dims)
    A = np.array(draw(st.lists(values, min_size=m * k, max_size=m * k))).reshape(m, k)
    B = np.array(draw(st.lists(values, min_size=k * n, max_size=k * n))).reshape(k, n)
    return A, B


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operands(), st.sampled_from(ORDERS), st.integers(1, 7), st.integers(1, 5),
       st.sampled_from(["row", "tensor"]))
# found by CI: a subnormal column (|b| < 2^-1073) made the fallback's 2^1073 scale
# overflow to inf, and C a NaN with bound 0
@example((np.array([[131072.0]]), np.array([[5e-324]])), "antidiagonal", 1, 3, "row")
def test_final_exact_and_bounds_hold(ops, order, bits, s, scale):
    A, B = ops
    lm = LayeredMatmul(A, B, bits=bits, planes=s, order=order, scale=scale)
    ea, eb = lm.encode()
    exact = exact_matmul(A, B)
    out = list(lm)
    assert len(out) == lm.planned
    for res in out:
        assert res.bound_abs >= max_abs_error(res.C, exact)
    want = rounded(exact_matmul(planes.dequantize(ea), planes.dequantize(eb).T))
    if out[-1].fallback:  # recomputed from A and B (within the bound, checked above)
        rows, cols = out[-1].fallback
        want[rows, cols] = out[-1].C[rows, cols]
    np.testing.assert_array_equal(out[-1].C, want)
