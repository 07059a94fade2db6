"""The difference bound (lrmpi.nn.difference) never below the true deviation.

Against exact rationals and the float64 model, on graphs with every operator, in
every estimate mode at resolutions 1-4; ~10^3 samples per small net; near-ties;
and a mutation test: leaving out any one term of the bound makes some case fail.
"""
import numpy as np
import pytest
from bound_cases import MODES, bounded, graphs, mutation_cases, prepared, violations
from exact import exact_model_logits

from lrmpi.nn import difference, difference_relu, ops
from lrmpi.nn import graph as G
from lrmpi.nn.engine import LayeredInference

GRAPHS = graphs(np.random.default_rng(3))


@pytest.fixture(scope="module")
def references():
    return {name: (prepared(g), exact_model_logits(g, X), ops.forward(g, X))
            for name, g, X in GRAPHS}


@pytest.mark.parametrize("name, graph, X", GRAPHS, ids=[g[0] for g in GRAPHS])
def test_the_radius_covers_the_exact_and_the_float64_model(name, graph, X, references):
    model, exact, f64 = references[name]
    for r in (1, 2, 3, 4):
        for mode in MODES:
            for level in ("tight", "cheap") if mode == 0 else ("tight",):
                logits, radius = bounded(model, X, r, mode, level)
                assert not violations(logits, exact, radius), (r, mode, level)
                assert not violations(logits, f64, radius), (r, mode, level)
                assert np.all(np.isfinite(radius))


def _random_net(rng, kind):
    if kind == "mlp":
        d = 16
        return G.sequential([
            ("linear", {"W": rng.standard_normal((24, d)) * 0.5, "b": rng.standard_normal(24)}),
            ("relu", {}),
            ("linear", {"W": rng.standard_normal((24, 24)) * 0.3, "b": rng.standard_normal(24)}),
            ("relu", {}),
            ("linear", {"W": rng.standard_normal((5, 24)), "b": rng.standard_normal(5)})],
            (d,), head="softmax")
    return G.sequential([
        ("conv", {"W": rng.standard_normal((4, 2, 3, 3)) / 3, "b": rng.standard_normal(4),
                  "pads": (1, 1, 1, 1)}), ("relu", {}),
        ("conv", {"W": rng.standard_normal((4, 4, 3, 3)) / 5, "b": rng.standard_normal(4),
                  "strides": (2, 2)}), ("relu", {}),
        ("maxpool", {"kernel": (2, 2), "strides": (1, 1)}), ("flatten", {}),
        ("linear", {"W": rng.standard_normal((3, 16)), "b": rng.standard_normal(3)})],
        (2, 7, 7), head="softmax")


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_a_thousand_samples_never_exceed_the_radius(kind):
    rng = np.random.default_rng({"mlp": 21, "conv": 22}[kind])
    g = _random_net(rng, kind)
    X = rng.standard_normal((1000,) + g.input_shape) * np.exp(
        rng.uniform(-3, 3, (1000,) + (1,) * len(g.input_shape)))
    f64 = ops.forward(g, X)
    model = prepared(g)
    for r in (1, 2, 3):
        for mode in (0, 1, 2, "f64"):
            logits, radius = bounded(model, X, r, mode)
            assert not violations(logits, f64, radius), (r, mode)


def _near_ties(g, rng, n=120):
    """Inputs along segments that cross the float64 model's decision boundary, at
    distances from it between 1e-13 and 1e-1 of the segment."""
    out = []
    while len(out) < n:
        a, b = rng.standard_normal((2,) + g.input_shape)
        da, db = ops.decisions(g, ops.forward(g, np.stack([a, b])))
        if da == db:
            continue
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            d = ops.decisions(g, ops.forward(g, (a + mid * (b - a))[None]))[0]
            lo, hi = (mid, hi) if d == da else (lo, mid)
        for s in 10.0 ** rng.uniform(-13, -1, 6):
            out.append(a + (lo + s * rng.choice((-1, 1))) * (b - a))
    return np.stack(out)


def test_certified_decisions_equal_the_float64_models_on_near_ties():
    rng = np.random.default_rng(11)
    certified, edge = 0, 0
    for _ in range(6):
        g = _random_net(rng, "mlp")
        X = _near_ties(g, rng)
        want = ops.decisions(g, ops.forward(g, X))
        eng = LayeredInference(g, X, planes=4, rule="none")
        for _ in eng:
            st = eng.state
            cert = st["certified"]
            np.testing.assert_array_equal(st["predicted"][cert], want[cert])
            top2 = np.sort(st["logits"], axis=1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]
            edge += int(np.sum(cert & (margin < 4 * st["bound"])))
            certified += int(cert.sum())
    assert certified > 300 and edge > 10  # samples certified with margins at the bound's size


@pytest.fixture(scope="module")
def mutation_suite():
    cases = []
    for label, g, X, r, mode, ref, base, level in mutation_cases(np.random.default_rng(7)):
        R = ops.forward(g, X) if ref == "f64" else exact_model_logits(g, X)
        cases.append((label, X, r, mode, R, base, level, prepared(g, planes=max(4, r))))
    return cases


def _violates(model, X, r, mode, level, reference, dropped, monkeypatch):
    monkeypatch.setattr(difference, "DROPPED", frozenset(dropped))
    logits, radius = bounded(model, X, r, mode, level)
    return bool(violations(logits, reference, radius))


def test_each_mutation_case_is_covered_by_the_whole_bound(mutation_suite, monkeypatch):
    for label, X, r, mode, R, base, level, model in mutation_suite:
        assert not _violates(model, X, r, mode, level, R, base, monkeypatch), label


def _needed(term, suite, references, levels, monkeypatch):
    for label, X, r, mode, R, base, level, model in suite:
        if level in levels and _violates(model, X, r, mode, level, R, set(base) | {term},
                                         monkeypatch):
            return True
    for name, _, X in GRAPHS:
        model, exact, f64 = references[name]
        for r in (1, 2, 3):
            for mode in MODES if "tight" in levels else (0,):
                for level in levels:
                    if _violates(model, X, r, mode, level, f64, {term}, monkeypatch):
                        return True
    return False


@pytest.mark.parametrize("term", difference.TERMS)
def test_leaving_out_any_term_breaks_the_bound(term, mutation_suite, references, monkeypatch):
    assert _needed(term, mutation_suite, references, ("tight",), monkeypatch), \
        f"no case needs the term {term!r}: the tests could not catch its loss"


@pytest.mark.parametrize("term", ["carried", "input_truncation", "weight_truncation",
                                  "r_rounding", "float_rounding", "op_rounding"])
def test_leaving_out_any_term_breaks_the_cheap_bound(term, mutation_suite, references,
                                                     monkeypatch):
    """The cheap bound (resolution 1: no tensor read) has its own formulas."""
    assert _needed(term, mutation_suite, references, ("cheap",), monkeypatch), term


def test_a_samples_radius_does_not_depend_on_its_batch():
    name, g, X = GRAPHS[1]
    model = prepared(g)
    for mode in (0, 2, "f64"):
        _, whole = bounded(model, X, 2, mode)
        for i in range(len(X)):
            _, one = bounded(model, X[i:i + 1], 2, mode)
            np.testing.assert_array_equal(one[0], whole[i])


def test_the_one_plane_dense_product_is_the_general_paths_bit_for_bit():
    from lrmpi.nn.estimate import EstimateWeights, ops_product
    from lrmpi.nn.quantized import linear_at
    rng = np.random.default_rng(9)
    node = G.Node("linear", ["x"], "y", {"W": rng.standard_normal((7, 300))
                                          * np.exp(rng.uniform(-20, 20, (7, 1))),
                                          "b": np.zeros(7)})
    w = EstimateWeights(node, 7).leading(1)
    x = rng.standard_normal((5, 300)) * np.exp(rng.uniform(-30, 30, (5, 1)))
    x[2] = 0.0
    np.testing.assert_array_equal(ops_product(node, x, w, 1, 7), linear_at(node, x, w, 1, 7)[1])


@pytest.mark.parametrize("name, graph, X", GRAPHS, ids=[g[0] for g in GRAPHS])
def test_the_fused_pass_gives_the_reference_passs_radius_reading_only_what_it_wants(
        name, graph, X, references):
    """The tracker says what it reads (`wants`): the fused pass then materialises only
    those arrays (the cheap bound: none but the logits' C and z) and the radius, with
    the estimate's products through the fused kernels too, is the reference pass's
    bit for bit, in every mode."""
    from lrmpi.nn.difference import DiffTracker
    model = references[name][0]
    b = model.norms
    for r in (1, 2, 3):
        for mode, level in ((0, "cheap"), (0, "tight"), (1, "tight"), (2, "tight"),
                            ("f64", "tight")):
            _, want = bounded(model, X, r, mode, level)
            tr = DiffTracker(graph, b.norms, lambda n: b.estimates[n.output], r, model.bits,
                             len(X), {n.output: mode for n in graph.linear}, level,
                             product=model.fused.product)  # the estimate's products too
            seen = []
            linear = tr.linear

            def record(node, h, e, C, z, **kw):
                if model.fused.nodes[node.output].takes(r, model.bits):  # else float64 anyway
                    seen.append((node.output, h is None, C is None))
                return linear(node, h, e, C, z, **kw)
            tr.linear = record
            model.fused.forward(X, r, tr)
            np.testing.assert_array_equal(tr.logit_radius, want, err_msg=f"{r} {mode} {level}")
            if tr.fast:  # shapes, exponents and carried norms: no h, no C but the logits'
                assert all(no_h and (no_c or out == graph.output) for out, no_h, no_c in seen)
            else:        # the difference bound reads h; C only at the logits
                assert all(no_c or out == graph.output for out, _, no_c in seen)


@pytest.mark.parametrize("isa", __import__("lrmpi.numerics.kernels", fromlist=["x"])
                         .available_isas())
def test_the_estimate_made_in_the_passs_own_call_is_the_same_bits(isa):
    """The estimate's two products made inside the node's own kernel call
    (DiffTracker.before_linear, nn_layer's `estimate`: h's windows read once) give the
    radius the separate product calls give, bit for bit, on every ISA, in modes 1..3 at
    r = 1..3 (where p > r, and on depthwise and grouped convs and the logits, the
    separate calls stand); and the pass did make some."""
    from lrmpi.nn.difference import DiffTracker
    from lrmpi.nn.fused import FusedModel
    made = 0
    rng = np.random.default_rng(23)
    n_ = lambda op, i, o, **p: G.Node(op, [i], o, p)  # noqa: E731
    big = G.Graph("x", (3, 8, 8), [   # units and 32-column panels crossed: 150 x 64 rows
        n_("conv", "x", "c1", W=rng.standard_normal((40, 3, 3, 3)), b=rng.standard_normal(40),
           pads=(1, 1, 1, 1)), n_("relu", "c1", "a1"),
        n_("conv", "a1", "c2", W=rng.standard_normal((33, 40, 3, 3)) / 9,
           b=rng.standard_normal(33), pads=(1, 1, 1, 1)), n_("relu", "c2", "a2"),
        n_("flatten", "a2", "f"),
        n_("linear", "f", "h", W=rng.standard_normal((70, 33 * 64)) / 40,
           b=rng.standard_normal(70)), n_("relu", "h", "ah"),
        n_("linear", "ah", "y", W=rng.standard_normal((10, 70)), b=rng.standard_normal(10))],
        "y", "softmax").validate()
    cases = GRAPHS + [("big", big, rng.standard_normal((150, 3, 8, 8)))]
    for name, graph, X in cases:
        model = prepared(graph)
        b = model.norms
        fused = FusedModel(graph, model.weights, model.bits, isa=isa)
        for r in (1, 2, 3):
            for mode in (1, 2, 3):
                radii = []
                for inside in (True, False):
                    tr = DiffTracker(graph, b.norms, lambda n: b.estimates[n.output], r,
                                     model.bits, len(X), {n.output: mode for n in graph.linear},
                                     "tight", product=fused.product)
                    linear = tr.linear

                    def record(node, h, e, C, z, **kw):
                        nonlocal made
                        made += "estimate" in kw
                        return linear(node, h, e, C, z, **kw)
                    tr.linear = record
                    if not inside:
                        tr.before_linear = None
                    fused.forward(X, r, tr)
                    radii.append(tr.logit_radius.copy())
                np.testing.assert_array_equal(radii[0], radii[1], err_msg=f"{name} {r} {mode}")
    assert made >= 10


def test_the_estimates_products_through_the_kernels_are_the_reference_products():
    """FusedModel.product with the estimate's weight planes (leading p, and planes
    r+1..r+p scaled by 2^-(bits r)) equals quantized.linear_at's C bit for bit, on
    dense and conv nodes, inputs across 2^-1000..2^1000 and zero samples; with
    `minus` M it is numpy's M - C bit for bit (a zero's sign aside)."""
    from lrmpi.nn.quantized import linear_at
    rng = np.random.default_rng(17)
    checked = minus_checked = 0
    for _, g, _ in GRAPHS:
        model = prepared(g)
        est = model.norms.estimates
        for node in g.linear:
            shape = (6,) + tuple(g.shapes[node.inputs[0]])
            h = rng.standard_normal(shape) * np.exp2(rng.integers(-1000, 1000, (6,) + (1,) * (
                len(shape) - 1)))
            h[2] = 0.0
            for r in (1, 2, 3):
                for p in (1, 2, 3):
                    for w, key in ((est[node.output].leading(p), ("leading", p)),
                                   (est[node.output].residual(r, p), ("residual", r, p))):
                        got = model.fused.product(node, h, w, p, key)
                        if got is None:
                            continue
                        want = linear_at(node, h, w, p, model.bits)[1]
                        np.testing.assert_array_equal(got, want)
                        checked += 1
                        # minus M: fl(M - product), numpy's bits (M near the product
                        # too: cancellation, and exact zeros)
                        M = want * (1 + 2.0**-30 * rng.standard_normal(want.shape))
                        M[1] = rng.standard_normal(want.shape[1:]) * 2.0**rng.integers(-60, 60)
                        M[3] = want[3]
                        diff = model.fused.product(node, h, w, p, key, minus=M)
                        ref = M - want
                        # bit for bit, but for a zero's sign (the kernel's exact zero
                        # is +0: nothing reads D but through |.| and sums)
                        same = diff.view(np.uint64) == ref.view(np.uint64)
                        assert np.all(same | ((diff == 0) & (ref == 0)))
                        np.testing.assert_array_equal(diff, ref)
                        minus_checked += 1
    assert checked > 50 and minus_checked > 50


def test_digit_planes_past_r_of_an_r_plane_input_are_zeros():
    """p > r: P2 multiplies Q_r(h) = h - (h - Q_r(h)) (exact) cut to p planes, which is
    Q_r(h) itself: its entries are multiples of the step 2^(e - 7r) and its exponent
    is e's (a maximum at or above 2^(e-1) stays there: 2^(e-1) is a multiple of the
    step), also for maxima just above a power of two, subnormal and zero rows: so the
    estimate leaves no plane of h out there (difference.py: mid = 0)."""
    from lrmpi.nn.quantized import quantize_samples
    from lrmpi.nn.verified import residual, sample_exps
    rng = np.random.default_rng(5)
    h = rng.standard_normal((40, 50)) * np.exp2(rng.integers(-30, 30, (40, 1)))
    h[0] = 0.0
    h[1, :] = 2.0 ** -1060 * rng.standard_normal(50)
    h[2:8, 0] = np.exp2(np.arange(2, 8)) * (1 + 2.0 ** -40)    # just above 2^k
    h[2:8, 1:] = 0.25
    e = sample_exps(h)
    for r in (1, 2, 3):
        q = h - residual(h, e, 7, r)
        for p in range(r, 5):
            D, ep = quantize_samples(q, 7, p)
            # rows scaled by 2^-ep (exact: q's bits end at 2^(e - 7r)), steps normal
            back = sum(D[i].astype(np.float64) * 2.0 ** (-7 * (i + 1)) for i in range(p))
            np.testing.assert_array_equal(back, np.ldexp(q, -ep[:, None]))


def test_an_estimate_with_more_planes_than_r_leaves_none_of_h_out():
    """Modes p > r (a plan's precise estimate at a low resolution): the term of h's
    planes between p and r is 0, so dropping it changes no radius."""
    name, g, X = GRAPHS[0]
    model = prepared(g)
    for r, mode in ((1, 2), (1, 3), (2, 3), (2, 4)):
        _, whole = bounded(model, X, r, mode)
        difference.DROPPED = frozenset({"estimate_h_planes"})
        try:
            _, without = bounded(model, X, r, mode)
        finally:
            difference.DROPPED = frozenset()
        np.testing.assert_array_equal(whole, without)


def test_a_relu_read_by_one_linear_node_shares_its_pass_and_changes_no_bit(monkeypatch):
    """A ReLU whose output only a linear node reads waits for that node's input pass
    and both run as one (verified.relu_inputs): logits and radii the same bits as with
    the two passes, through the numpy pass and the fused layers, at every mode."""
    calls = []
    real = difference_relu.relu_inputs
    monkeypatch.setattr(difference_relu, "relu_inputs", lambda *a, **k: calls.append(1) or
                        real(*a, **k))
    for name, g, X in GRAPHS:
        model = prepared(g)
        for r in (1, 2, 3):
            for mode in MODES:
                fused = bounded(model, X, r, mode)
                with monkeypatch.context() as m:
                    m.setattr(difference.DiffTracker, "_fuses", lambda self, node: False)
                    apart = bounded(model, X, r, mode)
                for a, b in zip(fused, apart):
                    np.testing.assert_array_equal(a, b)
            pass_fused = model.evaluate(X, r)
            with monkeypatch.context() as m:
                m.setattr(difference.DiffTracker, "_fuses", lambda self, node: False)
                pass_apart = model.evaluate(X, r)
            for a, b in zip(pass_fused, pass_apart):
                np.testing.assert_array_equal(a, b)
    assert calls   # the fused pass was taken


def test_a_samples_radius_does_not_depend_on_a_tiny_sample_beside_it():
    """The fused passes over a node's input decide per row whether their scalings are
    exact (steps normal): a sample near 2^-990 in the batch sends only itself through
    the numpy pass (whose sums run in another order), not the whole batch (a review
    found the other samples' radii moving in their last bits)."""
    rng = np.random.default_rng(3)
    d = 500
    g = G.sequential([
        ("linear", {"W": rng.standard_normal((20, d)) / 20, "b": rng.standard_normal(20)}),
        ("relu", {}),
        ("linear", {"W": rng.standard_normal((4, 20)), "b": rng.standard_normal(4)})],
        (d,), head="softmax")
    model = prepared(g)
    X = rng.standard_normal((3, d))
    mixed = np.vstack([X[:1], X[1:2] * 2.0**-990, X[2:]])
    for r in (2, 3):
        for mode in (0, 1, 2):
            alone, beside = bounded(model, X, r, mode), bounded(model, mixed, r, mode)
            for a, b in zip(alone, beside):
                np.testing.assert_array_equal(a[[0, 2]], b[[0, 2]])
        alone, beside = model.evaluate(X, r), model.evaluate(mixed, r)
        for a, b in zip(alone, beside):
            np.testing.assert_array_equal(a[[0, 2]], b[[0, 2]])
