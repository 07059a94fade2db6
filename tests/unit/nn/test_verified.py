"""Verified linear algebra (lrmpi.nn.verified): every result above the exact value."""
import math
from fractions import Fraction

import numpy as np
import pytest

from lrmpi.nn import graph as G
from lrmpi.nn import operator_norms as ON, ops, verified as V


def _exact_norm_squared(row):
    return sum(Fraction(float(v)) ** 2 for v in row)


@pytest.mark.parametrize("scale", [1.0, 1e-300, 1e-320, 1e300, 1e-160])
def test_norm_up_is_above_the_exact_norm_at_every_scale(scale):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 700)) * scale
    x[1] = 0.0
    if scale == 1.0:
        x[2, :5] = 1e150
        x[3] *= np.exp(rng.uniform(-300, 300, 700))  # entries spanning 260 decades
    got = V.norm_up(x)
    assert np.all(np.isfinite(got)) and got[1] == 0.0
    for row, n in zip(x, got):
        exact = _exact_norm_squared(row)
        assert Fraction(float(n)) ** 2 >= exact
        slack = Fraction(float(n)) - Fraction(2.0**-1070)   # a subnormal result's ulps
        assert slack <= 0 or slack ** 2 <= exact * (1 + Fraction(1, 10**9))


def test_residual_is_exactly_the_truncated_planes():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 40)) * np.exp(rng.uniform(-20, 20, (5, 1)))
    e = V.sample_exps(x)
    for planes in (1, 2, 4):
        res = V.residual(x, e, 7, planes)
        for n in range(5):
            step = Fraction(2) ** (int(e[n]) - 7 * planes)
            for v, d in zip(x[n], res[n]):
                q = Fraction(float(v)) / step
                kept = Fraction(int(q)) * step          # truncation toward zero
                assert Fraction(float(d)) == Fraction(float(v)) - kept


def test_spectral_bound_is_above_the_true_norm_and_close():
    rng = np.random.default_rng(5)
    for shape in [(1, 7), (7, 1), (5, 9), (40, 30), (64, 64), (3, 200)]:
        M = rng.standard_normal(shape) * np.exp(rng.uniform(-3, 3, (shape[0], 1)))
        true = np.linalg.norm(M, 2)
        assert true <= ON.spectral_bound(M) <= true * 1.05 + 1e-300
    assert ON.spectral_bound(np.zeros((3, 4))) < 1e-300
    assert ON.spectral_bound(np.full((2, 2), 1e200)) >= 2e200


def _explicit(W, shape, p, absolute=False):
    node = G.Node("conv", ["x"], "y", {"W": np.abs(W) if absolute else W,
                                         "b": np.zeros(W.shape[0]), **p})
    n_in = int(np.prod(shape))
    cols = []
    for i in range(n_in):
        e = np.zeros(n_in)
        e[i] = 1.0
        cols.append(ops.float_linear(node, e.reshape((1,) + shape)).ravel())
    return np.stack(cols, axis=1)


CONVS = [({"pads": (1, 1, 1, 1)}, (4, 3, 3, 3), (3, 6, 6)),
         ({"pads": (0, 1, 2, 0), "strides": (2, 1), "dilations": (1, 2)}, (2, 2, 3, 2), (2, 7, 5)),
         ({"pads": (1, 1, 1, 1), "group": 3}, (3, 1, 3, 3), (3, 5, 5)),
         ({"pads": (2, 2, 2, 2), "group": 2}, (4, 1, 5, 4), (2, 4, 9)),
         ({"strides": (2, 2)}, (5, 2, 1, 1), (2, 4, 5)),
         ({"pads": (3, 3, 3, 3), "strides": (2, 2)}, (3, 2, 7, 7), (2, 9, 9))]


@pytest.mark.parametrize("p, wshape, shape", CONVS)
def test_convolution_operator_bounds_are_above_the_true_norms(p, wshape, shape):
    W = np.random.default_rng(6).standard_normal(wshape)
    M = _explicit(W, shape, p)
    true = np.linalg.norm(M, 2)
    sym = ON.conv_operator_bound(W, shape, p)
    assert true <= sym <= true * 2  # strides: the stride-1 convolution's norm
    overlap = ON.conv_overlap(p, wshape[2:])
    assert sym <= ON.im2col_operator_bound(W, p, overlap) * (1 + 1e-9)
    assert true <= ON.im2col_operator_bound(W, p, overlap)
    assert np.linalg.norm(_explicit(W, shape, p, absolute=True), 2) <= ON.abs_operator_bound(W, p)


def test_abs_operator_bound_of_a_matrix():
    W = np.random.default_rng(7).standard_normal((13, 29))
    assert np.linalg.norm(np.abs(W), 2) <= ON.abs_operator_bound(W)


def test_gamma_and_up_cover_their_roundings():
    assert V.gamma(10) > 10 * 2.0**-53
    assert V.up(1.0) > 1.0 and V.up(0.0) > 0.0
    assert math.isinf(V.up(math.inf))
