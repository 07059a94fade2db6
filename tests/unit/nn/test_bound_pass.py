"""The difference bound's fused pass over a linear node's input (ext/c/bound_pass.c,
verified.linear_inputs / residual_norm) against the numpy operations it replaces:
ut and the exponents bit for bit, every norm an upper bound on the exact norm
(Python fractions) and within float rounding of numpy's."""
import math
from fractions import Fraction

import numpy as np
import pytest

from lrmpi.nn import operator_norms as ON, verified as V


def exact_norm(rows):
    """Per row, a float at or just above the exact l2 norm (integer square roots of
    the exact sum of squares, scaled: no float rounding anywhere)."""
    out = []
    for row in rows:
        s = sum(Fraction(float(v)) ** 2 for v in row)
        if s == 0:
            out.append(0.0)
            continue
        t = max(0, 200 - s.numerator.bit_length() + s.denominator.bit_length()) // 2 + 1
        scaled = s * 4**t
        q = math.isqrt(-(-scaled.numerator // scaled.denominator)) + 1   # >= sqrt(s) 2^t
        r = float(Fraction(q, 2**t))
        if Fraction(r) < Fraction(q, 2**t):
            r = np.nextafter(r, np.inf)
        out.append(r)
    return np.array(out)


def cases():
    rng = np.random.default_rng(5)
    h = rng.standard_normal((9, 37)) * np.exp2(rng.integers(-40, 40, (9, 1)))
    h[1] = 0.0                       # a zero sample
    h[2] *= 2.0**-560                # squares underflow: norm_up scales these rows
    h[3, :5] = 2.0**-1070            # subnormal entries beside normal ones
    D = rng.standard_normal(h.shape) * np.exp2(rng.integers(-60, -20, (9, 1)))
    return h, D


@pytest.mark.parametrize("r,p", [(1, 0), (1, 1), (2, 1), (1, 3), (3, 2), (4, 3)])
@pytest.mark.parametrize("with_d", [False, True])
def test_linear_inputs_match_the_numpy_pass(r, p, with_d):
    h, D = cases()
    D = D if with_d else None
    bits = 7
    e = V.sample_exps(h)
    ut, nh, nut, eu, nmid = V.linear_inputs(h, D, e, bits, r, p)
    dh = V.residual(h, e, bits, r)
    ref_ut = -dh if D is None else D - dh
    np.testing.assert_array_equal(ut, ref_ut)
    ref_nut, ref_eu = V.norm_up(ref_ut, exps=True)
    np.testing.assert_array_equal(eu, ref_eu)
    mid = np.zeros_like(h) if p in (0, r) else (
        V.residual(h, e, bits, p) - dh if p < r else dh - V.residual(h, e, bits, p))
    for got, arr, ref in ((nh, h, V.norm_up(h)), (nut, ref_ut, ref_nut),
                          (nmid, mid, V.norm_up(mid))):
        assert np.all(got >= exact_norm(arr))
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-300)
    rn = V.residual_norm(ut, eu, bits, max(p, 1))
    res = V.residual(ref_ut, ref_eu, bits, max(p, 1))
    assert np.all(rn >= exact_norm(res))
    np.testing.assert_allclose(rn, V.norm_up(res), rtol=1e-13, atol=1e-300)


def test_steps_out_of_the_normal_range_and_non_finite_rows_take_numpy():
    h, _ = cases()
    h[4] *= 2.0**-900                # steps 2^(e - 7 r) below 2^-1000: numpy's fmod path
    h[5, 3] = np.nan
    e = V.sample_exps(np.nan_to_num(h))
    ut, nh, nut, eu, nmid = V.linear_inputs(h, None, e, 7, 2, 1)
    dh = V.residual(h, e, 7, 2)
    np.testing.assert_array_equal(ut, -dh)
    ok = np.arange(len(h)) != 5
    assert np.all(nh[ok] >= exact_norm(h[ok]))
    assert nh[5] == np.inf and V.norm_up(h[5:6])[0] == np.inf   # NaN: no finite bound


def test_relu_difference_matches_numpy():
    h, D = cases()
    D[6] = h[6] + 1.0                 # w far from x: signs flip
    y = np.maximum(h, 0.0)
    Dy, nw, nDy = V.relu_difference(h, D, y)
    w = h - D
    ref = y - np.maximum(w, 0.0)
    np.testing.assert_array_equal(Dy, ref)
    for got, arr in ((nw, w), (nDy, ref)):
        assert np.all(got >= exact_norm(arr))
        np.testing.assert_allclose(got, V.norm_up(arr), rtol=1e-13, atol=1e-300)
    h[7, 0], D[7, 1] = np.nan, np.inf  # no finite bound for those rows: inf
    _, nw, nDy = V.relu_difference(h, D, np.maximum(h, 0.0))
    assert nw[7] == np.inf and nDy[7] == np.inf


@pytest.mark.parametrize("geometry", [
    {"kernel": (2, 2)},                                           # VGG's 2x2 / 2
    {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)},  # ResNet's stem
    {"kernel": (3, 2), "strides": (1, 2), "dilations": (2, 1), "pads": (2, 0, 1, 1),
     "ceil_mode": 1},                                            # every rule at once
    {"kernel": (2, 3), "strides": (2, 2), "pads": (0, 0, 1, 1)}])  # a window past the edge
def test_maxpool_difference_matches_numpy(geometry):
    """The fused pass at a max pooling (difference.py's estimate there): Dy the same
    bits as ops.pool's y - maxpool(x - D), NaN kept where numpy keeps it, norms above
    the exact ones and within rounding of norm_up's, inf for a row without a bound."""
    from lrmpi.nn import ops
    from lrmpi.nn.operators import maxpool_taps, pool_geometry
    h, D = cases()                    # 37 entries per sample: 3 x 4 x 3 images
    x, Dx = h[:, :36].reshape(9, 3, 4, 3).copy(), D[:, :36].reshape(9, 3, 4, 3) * 3.0
    x, Dx = np.concatenate([x, -x], axis=3), np.concatenate([Dx, Dx], axis=3)  # 4 x 6
    Dx[6] = x[6] + 1.0                # w far from x: other taps win
    x[7, 1, 2, 0] = np.nan            # a NaN in a window: kept in that output
    Dx[8, 0, 1, 1] = np.nan           # and one in w alone (y is finite there)
    x[1], Dx[1] = 0.0, 0.0            # windows of zeros: +0 rows then -0 rows tie
    x[1, :, 1::2] = -0.0              # (numpy's maximum takes the second: y has -0)
    y = ops.pool(x, geometry, "max")
    taps = maxpool_taps(geometry, *pool_geometry(4, 6, geometry))
    Dy, nw, nDy = V.maxpool_difference(x, Dx, y, taps)
    w = x - Dx
    ref = y - ops.pool(w, geometry, "max")
    np.testing.assert_array_equal(Dy, ref)
    assert np.array_equal(Dy.view(np.uint64)[:7], ref.view(np.uint64)[:7])   # signed zeros
    assert np.signbit(y[1]).any()
    for got, arr in ((nw, w), (nDy, ref)):
        flat = arr.reshape(9, -1)
        assert np.all(got[:7] >= exact_norm(flat[:7]))
        np.testing.assert_allclose(got, V.norm_up(flat), rtol=1e-13, atol=1e-300)
    assert nw[7] == nw[8] == nDy[8] == np.inf and np.isnan(Dy[8]).any()
    with pytest.raises(ValueError, match="pool"):
        V.maxpool_difference(x, Dx, y, taps[:9])


@pytest.mark.parametrize("q", [1, 2, 4])
def test_weight_residual_rows_fused_are_upper_bounds_as_numpy_s(q):
    """The weights' residual norms W - Q_q(W) per row (norms.NodeNorms.residual) from the
    fused pass: row bounds above the exact norms and within rounding of the numpy pass
    they replace; a row whose steps leave the normal range takes that numpy pass."""
    from lrmpi.nn.norms import _row_norms
    from lrmpi.numerics import planes as P
    rng = np.random.default_rng(q)
    W = rng.standard_normal((12, 50)) * np.exp2(rng.integers(-20, 20, (12, 1)))
    W[3] = 0.0
    e = P.exponents(W)
    fused = V.residual_squares(W, e, 7, q)
    d = V.residual(W, e, 7, q)
    ref = np.einsum("ij,ij->i", d, d)
    np.testing.assert_allclose(fused, ref, rtol=1e-13, atol=0)
    assert np.all(_row_norms(fused, W.shape[1]) >= exact_norm(d))
    tiny = W * 2.0**-1000                     # steps below the normal range: no fused pass
    assert V.residual_squares(tiny, P.exponents(tiny), 7, q) is None


def test_weight_rows_one_pass_as_the_numpy_passes():
    """kernels.weight_rows (the norms' one pass over W): rows' max over finite entries as
    rowmax, sums of |w| and w^2 and the columns' sums of |w| within rounding of numpy's;
    NaN/Inf reported (and the max of the finite entries kept), sums past DBL_MAX not."""
    from lrmpi.numerics import kernels as K
    rng = np.random.default_rng(11)
    W = rng.standard_normal((7, 45)) * np.exp2(rng.integers(-30, 30, (7, 1)))
    amax, sabs, ssq, cols, bad = K.weight_rows(W)
    assert not bad
    np.testing.assert_array_equal(amax, K.rowmax(W)[0])
    np.testing.assert_allclose(sabs, np.abs(W).sum(axis=1), rtol=1e-14)
    np.testing.assert_allclose(ssq, (W * W).sum(axis=1), rtol=1e-14)
    np.testing.assert_allclose(cols, np.abs(W).sum(axis=0), rtol=1e-14)
    for v in (np.nan, np.inf, -np.inf):
        X = W.copy()
        X[2, 9] = v
        amax, *_, bad = K.weight_rows(X)
        assert bad
        fin = np.where(np.isfinite(X), np.abs(X), 0.0).max(axis=1)   # the finite entries'
        np.testing.assert_array_equal(amax, fin)
    X = W.copy()
    X[4, :3] = 1.7e308                        # finite entries whose sum is not
    amax, *_, bad = K.weight_rows(X)
    assert not bad and amax[4] == 1.7e308
    with pytest.raises(ValueError, match="overlaps"):
        K.weight_rows(X, cols=X.ravel()[1:46])


def test_weight_exponents_travel_with_the_model():
    """The rows' exponents the norms' pass found are the rowmax ones, and a pickled
    NodeWeights (the model sent to the ranks) keeps them: its digits are the same bits."""
    import pickle
    from lrmpi.nn.graph import Node
    from lrmpi.nn.quantized import NodeWeights
    from lrmpi.numerics import kernels as K, planes as P
    rng = np.random.default_rng(3)
    W = rng.standard_normal((6, 4, 3, 3)) * np.exp2(rng.integers(-9, 9, (6, 1, 1, 1)))
    node = Node("conv", ["x"], "y", {"W": W, "b": np.zeros(6), "group": 1})
    nw = NodeWeights(node, 7, 3)
    _, _, amax, finite = ON.weight_norms(W, node.params)
    assert finite
    np.testing.assert_array_equal(nw.exponents(amax), P.exponents(nw.W2))
    back = pickle.loads(pickle.dumps(nw))
    np.testing.assert_array_equal(back._exps, nw._exps)
    np.testing.assert_array_equal(back.enc.digits, P.encode(nw.W2, 7, 3).digits)
    assert K.rowmax(nw.W2)[0].shape == amax.shape


def test_norms_of_tiny_weights_are_not_lost_to_underflow(tmp_path):
    """Weights whose squares (and the product of their sums) underflow: the row norms,
    || |W| || and the cheap operator norm stay above the exact values, not near 0."""
    from lrmpi import config
    from lrmpi.nn import graph as G
    from lrmpi.nn.engine import PreparedModel
    from lrmpi.nn.norms import _row_norms
    W = np.full((3, 4), 2.0**-600)
    exact = math.sqrt(12) * 2.0**-600     # ||W||_2 = || |W| ||_2 of a constant 3 x 4 matrix
    A, sq, _, _ = ON.weight_norms(W)
    assert A >= exact and ON.abs_operator_bound(W) >= exact
    assert np.all(_row_norms(sq, 4) >= 2 * 2.0**-600)
    g = G.sequential([("linear", {"W": W, "b": np.zeros(3)})], (4,))
    with config.configure(cache_dir=str(tmp_path)):
        node = next(iter(PreparedModel(g, 7, 3).norms.norms.nodes.values()))
    assert node.S["cheap"] >= exact and node.A >= exact


@pytest.mark.parametrize("r,p", [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2)])
def test_a_relu_and_its_readers_input_pass_in_one_give_the_two_passes_bits(r, p):
    """verified.relu_inputs (a ReLU whose output a linear node reads: one pass, Dy not
    made) returns every value relu_difference then linear_inputs return, bit for bit:
    ut, the exponents and all five norms, on rows whose sums the fused pass finishes,
    rows that go through norm_up (zero, tiny, subnormal), a row holding NaN, and with
    steps below the normal range (the two functions themselves)."""
    x, D = cases()
    D[6] = x[6] + 1.0                 # signs flip between x and w
    x[7, 0] = np.nan                  # no finite bound: inf
    y = np.maximum(x, 0.0)
    for scale in (1.0, 2.0**-1000):   # 2^-1000: steps below the normal range
        xs, Ds, ys = x * scale, D * scale, y * scale
        e = V.sample_exps(np.nan_to_num(ys))
        Dy, nw, nDy = V.relu_difference(xs, Ds, ys)
        want = V.linear_inputs(ys, Dy, e, 7, r, p) + (nw, nDy)
        got = V.relu_inputs(xs, Ds, ys, e, 7, r, p)
        assert len(got) == len(want) == 7
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
