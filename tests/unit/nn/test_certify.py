"""Bounds on the logits never below the true error (exact rationals), certified
decisions never different from the float model's, operator-norm bounds above the
true norms."""
from fractions import Fraction

import numpy as np
import pytest
from exact import exact_model_logits

from lrmpi.nn import certify, operator_norms, ops
from lrmpi.nn import graph as G
from lrmpi.nn.engine import LayeredInference, PreparedModel


def _graphs(rng):
    d = 10
    mlp = G.sequential([("linear", {"W": rng.standard_normal((8, d)), "b": rng.standard_normal(8)}),
                        ("relu", {}),
                        ("linear", {"W": rng.standard_normal((8, 8)) / 3, "b": rng.standard_normal(8)}),
                        ("leakyrelu", {"alpha": 0.1}),
                        ("linear", {"W": rng.standard_normal((4, 8)), "b": rng.standard_normal(4)})],
                       (d,), head="softmax")
    conv = G.sequential([("conv", {"W": rng.standard_normal((3, 2, 3, 3)), "b": rng.standard_normal(3),
                                   "pads": (1, 1, 1, 1)}),
                         ("relu", {}), ("maxpool", {"kernel": (2, 2)}), ("flatten", {}),
                         ("linear", {"W": rng.standard_normal((3, 12)), "b": rng.standard_normal(3)})],
                        (2, 4, 4), head="softmax")
    nodes = [G.Node("conv", ["x"], "a", {"W": rng.standard_normal((2, 2, 3, 3)) / 3,
                                          "b": rng.standard_normal(2), "pads": (1, 1, 1, 1)}),
             G.Node("relu", ["a"], "r"),
             G.Node("add", ["r", "x"], "s"),
             G.Node("affine", ["s"], "t", {"fn": "mul", "c": np.array([[[[0.5]], [[2.0]]]])}),
             G.Node("globalavgpool", ["t"], "p"), G.Node("flatten", ["p"], "f"),
             G.Node("linear", ["f"], "y", {"W": rng.standard_normal((3, 2)),
                                           "b": rng.standard_normal(3)})]
    res = G.Graph("x", (2, 4, 4), nodes, "y", "softmax").validate()
    return [("mlp", mlp, rng.standard_normal((6, d)) * np.exp(rng.uniform(-2, 2, (6, 1)))),
            ("conv", conv, rng.standard_normal((4, 2, 4, 4))),
            ("residual", res, rng.standard_normal((4, 2, 4, 4)))]


GRAPHS = _graphs(np.random.default_rng(3))


@pytest.mark.parametrize("name, graph, X", GRAPHS, ids=[g[0] for g in GRAPHS])
def test_logit_bounds_cover_the_exact_and_the_float64_model(name, graph, X):
    exact = exact_model_logits(graph, X)
    f64 = ops.forward(graph, X)
    model = PreparedModel(graph, 7, 3)
    prev = None
    for r in (1, 2, 3):
        logits, radius = model.evaluate(X, r)
        for n in range(len(X)):
            for j in range(logits.shape[1]):
                ours = Fraction(float(logits[n, j]))
                rho = Fraction(float(radius[n, j]))
                assert abs(ours - exact[n, j]) <= rho, (r, n, j)
                assert abs(ours - Fraction(float(f64[n, j]))) <= rho, (r, n, j)
        if prev is not None:  # bounds shrink with the resolution
            assert np.all(radius <= prev * 1.01)
        prev = radius


def test_certified_decisions_equal_the_float_model_on_near_ties():
    """Many random models scaled so that margins are tiny: whatever the engine
    certifies agrees with the float64 model (and nothing wrong is ever certified)."""
    rng = np.random.default_rng(11)
    certified_total = 0
    for trial in range(30):
        d = 16
        W2 = rng.standard_normal((5, 12)) * 10.0 ** rng.uniform(-4, 0)
        g = G.sequential([("linear", {"W": rng.standard_normal((12, d)),
                                      "b": rng.standard_normal(12)}), ("relu", {}),
                          ("linear", {"W": W2, "b": np.zeros(5)})], (d,), head="softmax")
        X = rng.standard_normal((40, d))
        want = ops.decisions(g, ops.forward(g, X))
        eng = LayeredInference(g, X, planes=3, rule="none")
        for _ in eng:
            cert = eng.state["certified"]
            np.testing.assert_array_equal(eng.state["predicted"][cert], want[cert])
        certified_total += int(eng.state["certified"].sum())
    assert certified_total > 100  # the test certifies something


def test_operator_norm_bounds_are_above_the_true_norms():
    rng = np.random.default_rng(5)
    for shape in [(1, 7), (7, 1), (5, 9), (40, 30), (64, 64)]:
        M = rng.standard_normal(shape) * np.exp(rng.uniform(-3, 3, (shape[0], 1)))
        true = np.linalg.norm(M, 2)
        b = operator_norms.spectral_bound(M)
        assert true <= b <= true * 1.05 + 1e-300
    # a convolution as an explicit matrix, padded, strided, dilated, grouped
    for p, W, shape in [({"pads": (1, 1, 1, 1)}, rng.standard_normal((4, 3, 3, 3)), (3, 6, 6)),
                        ({"pads": (0, 1, 2, 0), "strides": (2, 1), "dilations": (1, 2)},
                         rng.standard_normal((2, 2, 3, 2)), (2, 7, 5)),
                        ({"pads": (1, 1, 1, 1), "group": 3}, rng.standard_normal((3, 1, 3, 3)),
                         (3, 5, 5))]:
        n_in = int(np.prod(shape))
        cols = []
        for i in range(n_in):
            e = np.zeros(n_in)
            e[i] = 1.0
            node = G.Node("conv", ["x"], "y", {"W": W, "b": np.zeros(W.shape[0]), **p})
            cols.append(ops.float_linear(node, e.reshape((1,) + shape)).ravel())
        true = np.linalg.norm(np.stack(cols, axis=1), 2)
        b = operator_norms.conv_operator_bound(W, shape, p)
        assert true <= b, (p, true, b)


def test_weight_residuals_are_exact_and_their_norms_above_the_true_ones():
    """W - Q_q(W), computed by truncating each row at its q-th plane (norms.py, by blocks
    of rows), equals W minus the digit planes' exact value, bit for bit: rows of every
    magnitude (tiny ones whose last plane lies near the subnormals, zero rows, exact
    multiples of the plane), both signs; its Frobenius and row norms bound the true ones."""
    from lrmpi.nn.norms import NodeNorms
    from lrmpi.nn.quantized import NodeWeights
    from lrmpi.numerics import planes as P
    rng = np.random.default_rng(11)
    W = rng.standard_normal((40, 9)) * np.exp2(rng.integers(-60, 60, (40, 1)))
    W[3] = 0.0
    W[4] = np.exp2(-1000) * rng.standard_normal(9)     # the last plane's unit subnormal
    W[5] = np.exp2(-1060) * rng.standard_normal(9)     # below the normal range altogether
    W[6] = np.round(W[6] * 2 ** 20) / 2 ** 20          # few bits: residuals of zero
    W[7, :] = -np.exp2(30)                             # a power of two, negative
    node = G.Node("linear", ["x"], "y", {"W": W, "b": np.zeros(40)})
    for bits, planes in [(7, 4), (3, 7), (7, 7)]:
        nn_ = NodeNorms(node, NodeWeights(node, bits, planes), (9,), (None, 40))
        enc = P.encode(np.ascontiguousarray(W), bits, 7)
        for q in range(1, planes + 1):
            want = W - P.dequantize(enc, q)
            got = nn_._residual_rows(q, 0, 40)
            assert np.array_equal(got, want), (bits, q)
            nn_.residual(q, "cheap")
            assert nn_.drows[q].min() >= 0 and np.all(nn_.drows[q] >= np.linalg.norm(want, axis=1))
            assert nn_.dS[q]["cheap"] >= np.linalg.norm(want, 2)


def test_the_base_norms_come_from_the_cache(tmp_path):
    """|| |W| ||, the row norms and the cheap S are kept with the norms: a model met
    before does not compute them again, and gets the same values."""
    from lrmpi import config
    from lrmpi.nn import operator_norms as ON
    from lrmpi.nn.engine import PreparedModel
    rng = np.random.default_rng(3)
    g = G.sequential([("linear", {"W": rng.standard_normal((20, 30)), "b": np.zeros(20)}),
                      ("relu", {}), ("linear", {"W": rng.standard_normal((4, 20)),
                                               "b": np.ones(4)})], (30,))
    with config.configure(cache_dir=str(tmp_path)):
        first = PreparedModel(g, 7, 3).norms.norms.nodes
        calls = []
        real = ON.weight_norms   # the one pass over W that base() makes
        ON.weight_norms = lambda *a, **k: calls.append(1) or real(*a, **k)
        try:
            again = PreparedModel(g, 7, 3).norms.norms.nodes
        finally:
            ON.weight_norms = real
    assert not calls
    for name, a in first.items():
        b = again[name]
        assert (a.A, a.S["cheap"]) == (b.A, b.S["cheap"]) and np.array_equal(a.rows, b.rows)
