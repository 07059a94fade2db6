"""The fused C layers (lrmpi/nn/fused.py, ext/c/nn_body.h) compute resolution r bit
for bit: against the Python-integer network (tests/exact.py) for every activation
they absorb, on every ISA this CPU has, and against quantized.py's pass on models
large enough to cross the kernels' blocks; the bound hook sees the same values."""
from fractions import Fraction

import numpy as np
import pytest
from exact import exact_linear

from lrmpi.nn import ops
from lrmpi.nn import graph as G
from lrmpi.nn.fused import FusedModel
from lrmpi.nn.quantized import NodeWeights, forward_at
from lrmpi.numerics import kernels

ISAS = kernels.available_isas()
ACTS = [("relu", {}), ("leakyrelu", {"alpha": 0.1}), ("prelu", {"slope": None}),
        ("clip", {"lo": -0.5, "hi": 1.5})]


def _act(name, params, channels, rng, spatial=False):
    if name == "prelu":
        s = rng.uniform(-0.5, 0.5, channels)
        return name, {"slope": s.reshape(channels, 1, 1) if spatial else s}
    return name, params


def dense_chain(rng, act, d=70, h=45):
    """linear -> act -> linear -> act -> linear: each activation absorbed, each
    hidden layer's planes written by the layer before."""
    a = _act(*act, h, rng)
    return G.sequential([("linear", {"W": rng.standard_normal((h, d)), "b": rng.standard_normal(h)}),
                         a, ("linear", {"W": rng.standard_normal((h, h)) / 3,
                                        "b": rng.standard_normal(h)}),
                         _act(*act, h, rng),
                         ("linear", {"W": rng.standard_normal((5, h)), "b": rng.standard_normal(5)})],
                        (d,), head="softmax")


def conv_chain(rng, act):
    """conv (strided, dilated, padded) -> act -> conv -> act -> depthwise conv -> act
    -> flatten -> linear: NHWC planes handed from conv to conv."""
    layers = [("conv", {"W": rng.standard_normal((6, 3, 3, 3)), "b": rng.standard_normal(6),
                        "pads": (1, 2, 0, 1), "strides": (1, 2), "dilations": (2, 1)}),
              _act(*act, 6, rng, spatial=True),
              ("conv", {"W": rng.standard_normal((7, 6, 2, 3)) / 2, "b": rng.standard_normal(7),
                        "pads": (1, 1, 1, 1)}),
              _act(*act, 7, rng, spatial=True),
              ("conv", {"W": rng.standard_normal((7, 1, 3, 3)), "b": rng.standard_normal(7),
                        "pads": (1, 1, 1, 1), "group": 7, "strides": (2, 1)}),
              _act(*act, 7, rng, spatial=True), ("flatten", {})]
    flat = int(np.prod(G.sequential(layers, (3, 9, 8)).shapes[f"t{len(layers) - 1}"]))
    layers.append(("linear", {"W": rng.standard_normal((4, flat)) / 8,
                              "b": rng.standard_normal(4)}))
    return G.sequential(layers, (3, 9, 8), head="softmax")


def pool_chain(rng, act):
    """conv -> act -> max pool (pads, ceil_mode, dilation) -> conv -> max pool (no act)
    -> flatten -> linear: pooled planes handed on, NHWC and flat."""
    layers = [("conv", {"W": rng.standard_normal((5, 2, 3, 3)), "b": rng.standard_normal(5),
                        "pads": (1, 1, 1, 1)}),
              _act(*act, 5, rng, spatial=True),
              ("maxpool", {"kernel": (3, 2), "strides": (2, 2), "pads": (1, 0, 1, 1),
                           "ceil_mode": 1, "dilations": (1, 2)}),
              ("conv", {"W": rng.standard_normal((6, 5, 2, 2)) / 2, "b": rng.standard_normal(6)}),
              ("maxpool", {"kernel": (2, 2), "strides": (1, 1)}), ("flatten", {})]
    flat = int(np.prod(G.sequential(layers, (2, 11, 9)).shapes[f"t{len(layers) - 1}"]))
    layers.append(("linear", {"W": rng.standard_normal((3, flat)) / 4,
                              "b": rng.standard_normal(3)}))
    return G.sequential(layers, (2, 11, 9), head="softmax")


def res_chain(rng, act):
    """Residual blocks: a projection computed before the conv whose sum it joins, an
    identity shortcut from a tensor two convs read (planes for one, the array for
    the other), an add of two convs (the later one takes it: the earlier one's
    other addend does not exist yet when it runs)."""
    def conv(i, o, k, cin, cout):
        return G.Node("conv", [i], o, {"W": rng.standard_normal((cout, cin, k, k)) / 2,
                                      "b": rng.standard_normal(cout), "pads": (k // 2,) * 4})
    name, params = _act(*act, 4, rng, spatial=True)
    nodes = [conv("x", "a", 3, 3, 4), G.Node(name, ["a"], "b", params),
             conv("x", "p", 1, 3, 4), conv("b", "c", 3, 4, 4),
             G.Node("add", ["c", "p"], "d"), G.Node(name, ["d"], "e", params),
             conv("e", "f", 3, 4, 4), G.Node("add", ["e", "f"], "h"),
             G.Node(name, ["h"], "i", params), conv("i", "k", 1, 4, 4),
             conv("i", "m", 3, 4, 4),
             G.Node("add", ["k", "m"], "n"), G.Node("flatten", ["n"], "o")]
    flat = int(np.prod(G.Graph("x", (3, 6, 5), list(nodes), "o").validate().shapes["o"]))
    nodes.append(G.Node("linear", ["o"], "y", {"W": rng.standard_normal((3, flat)) / 6,
                                               "b": rng.standard_normal(3)}))
    return G.Graph("x", (3, 6, 5), nodes, "y", "softmax").validate()


def wide_chain(rng, act):
    """Channels a multiple of 32 (the epilogue rounds and finishes a sample's rows as
    one run): conv -> act -> conv + residual -> act -> max pool -> conv -> act ->
    flatten -> linear."""
    def conv(i, o, cin, cout):
        return G.Node("conv", [i], o, {"W": rng.standard_normal((cout, cin, 3, 3)) / 4,
                                      "b": rng.standard_normal(cout), "pads": (1, 1, 1, 1)})
    name, params = _act(*act, 32, rng, spatial=True)
    name2, params2 = _act(*act, 64, rng, spatial=True)
    nodes = [conv("x", "a", 2, 32), G.Node(name, ["a"], "b", params), conv("b", "c", 32, 32),
             G.Node("add", ["b", "c"], "d"), G.Node(name, ["d"], "e", params),
             G.Node("maxpool", ["e"], "f", {"kernel": (2, 2), "strides": (2, 2)}),
             conv("f", "g", 32, 64), G.Node(name2, ["g"], "h", params2),
             G.Node("flatten", ["h"], "i")]
    flat = int(np.prod(G.Graph("x", (2, 6, 4), list(nodes), "i").validate().shapes["i"]))
    nodes.append(G.Node("linear", ["i"], "y", {"W": rng.standard_normal((3, flat)) / 16,
                                               "b": rng.standard_normal(3)}))
    return G.Graph("x", (2, 6, 4), nodes, "y", "softmax").validate()


def odd_chain(rng, act):
    """Residual blocks whose channels (13, 24) and positions (5 x 7 = 35: blocks of 16,
    16, 3 rows) are off the epilogue's 8 x 8 transposes: their tails go element by
    element, the rest in whole runs (the stored arrays and the residual read back)."""
    def conv(i, o, cin, cout):
        return G.Node("conv", [i], o, {"W": rng.standard_normal((cout, cin, 3, 3)) / 4,
                                      "b": rng.standard_normal(cout), "pads": (1, 1, 1, 1)})
    name, params = _act(*act, 13, rng, spatial=True)
    name2, params2 = _act(*act, 24, rng, spatial=True)
    nodes = [conv("x", "a", 2, 13), G.Node(name, ["a"], "b", params), conv("b", "c", 13, 13),
             G.Node("add", ["b", "c"], "d"), G.Node(name, ["d"], "e", params),
             conv("e", "f", 13, 24), G.Node(name2, ["f"], "g", params2), conv("g", "h", 24, 24),
             G.Node("add", ["g", "h"], "i"), G.Node(name2, ["i"], "j", params2),
             G.Node("flatten", ["j"], "k")]
    flat = int(np.prod(G.Graph("x", (2, 5, 7), list(nodes), "k").validate().shapes["k"]))
    nodes.append(G.Node("linear", ["k"], "y", {"W": rng.standard_normal((3, flat)) / 16,
                                               "b": rng.standard_normal(3)}))
    return G.Graph("x", (2, 5, 7), nodes, "y", "softmax").validate()


def _exact(graph, weights, X, r):
    return ops.forward(graph, X, lambda node, h: exact_linear(node, h, weights[node.output].enc,
                                                              r, 7))


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a).view(np.uint64), np.asarray(b).view(np.uint64))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", ACTS, ids=[a[0] for a in ACTS])
@pytest.mark.parametrize("kind", ["dense", "conv", "pool", "res", "wide", "odd"])
def test_fused_equals_the_exact_integer_network(isa, act, kind):
    rng = np.random.default_rng(11)
    graph = {"dense": dense_chain, "conv": conv_chain, "pool": pool_chain,
             "res": res_chain, "wide": wide_chain, "odd": odd_chain}[kind](rng, act)
    X = rng.standard_normal((5,) + graph.input_shape) * np.exp(rng.uniform(-4, 4, (5,) + (1,) * len(graph.input_shape)))
    weights = {n.output: NodeWeights(n, 7, 3) for n in graph.linear}
    fm = FusedModel(graph, weights, 7, isa=isa)
    absorbed = {fn.act for fn in fm.nodes.values()}
    assert act[0] in absorbed  # the activation really went through the kernels
    assert any(fn.feeds is not None for fn in fm.nodes.values())
    if kind == "pool":  # both poolings, and the flatten, inside the conv nodes' calls
        assert sum(fn.pool is not None for fn in fm.nodes.values()) == 2
        assert any(fn.passes for fn in fm.nodes.values())
    if kind == "res":  # every add inside the call of the conv that comes later
        assert sorted(fn.res_input for fn in fm.nodes.values() if fn.res_node) == ["e", "k", "p"]
        assert fm.nodes["c"].shared and fm.nodes["c"].feeds is fm.nodes["f"]
    for r in (1, 2, 3):
        _same(fm.forward(X, r), _exact(graph, weights, X, r))


@pytest.mark.parametrize("isa", ISAS)
def test_fused_crosses_the_kernels_blocks(isa):
    """Many units of rows, O and k off the 32/64 grid, a 1x1 strided conv, r up to 4,
    batches not a multiple of 32: against quantized.py's pass (itself exact)."""
    rng = np.random.default_rng(5)
    conv = G.sequential([("conv", {"W": rng.standard_normal((40, 5, 3, 3)), "b": rng.standard_normal(40),
                                   "pads": (1, 1, 1, 1)}), ("relu", {}),
                         ("conv", {"W": rng.standard_normal((33, 40, 1, 1)),
                                   "b": rng.standard_normal(33), "strides": (2, 2)}), ("relu", {}),
                         ("flatten", {}),
                         ("linear", {"W": rng.standard_normal((3, 33 * 8 * 6)), "b": rng.standard_normal(3)})],
                        (5, 15, 11))
    dense = G.sequential([("linear", {"W": rng.standard_normal((300, 200)), "b": rng.standard_normal(300)}),
                          ("relu", {}),
                          ("linear", {"W": rng.standard_normal((97, 300)), "b": rng.standard_normal(97)})],
                         (200,))
    for graph, n in ((conv, 37), (dense, 523)):
        X = rng.standard_normal((n,) + graph.input_shape)
        weights = {nd.output: NodeWeights(nd, 7, 4) for nd in graph.linear}
        fm = FusedModel(graph, weights, 7, isa=isa)
        for r in (1, 2, 4):
            _same(fm.forward(X, r), forward_at(graph, weights, X, r, 7))


@pytest.mark.parametrize("isa", ISAS)
def test_extreme_scales_round_once_like_the_reference(isa):
    """Samples near the subnormal range and near overflow: r = 1 leaves the exact
    scaling for ldexp's one rounding; r > 1 the decode's subnormal path."""
    rng = np.random.default_rng(3)
    graph = G.sequential([("linear", {"W": rng.standard_normal((9, 6)) * 1e-300,
                                      "b": np.zeros(9)}), ("relu", {}),
                          ("linear", {"W": rng.standard_normal((2, 9)), "b": np.zeros(2)})], (6,))
    X = rng.standard_normal((4, 6)) * np.array([[1e-12], [1e-8], [1.0], [1e10]])
    weights = {n.output: NodeWeights(n, 7, 3) for n in graph.linear}
    fm = FusedModel(graph, weights, 7, isa=isa)
    for r in (1, 2, 3):
        _same(fm.forward(X, r), _exact(graph, weights, X, r))


def test_nan_and_inf_are_refused():
    rng = np.random.default_rng(1)
    graph = dense_chain(rng, ACTS[0])
    weights = {n.output: NodeWeights(n, 7, 2) for n in graph.linear}
    fm = FusedModel(graph, weights, 7)
    X = rng.standard_normal((3, 70))
    X[1, 4] = np.nan
    with pytest.raises(FloatingPointError):
        fm.forward(X, 1)
    big = G.sequential([("linear", {"W": np.full((3, 2), 1e300), "b": np.zeros(3)}), ("relu", {}),
                        ("linear", {"W": np.ones((2, 3)), "b": np.zeros(2)})], (2,))
    fm = FusedModel(big, {n.output: NodeWeights(n, 7, 2) for n in big.linear}, 7)
    with pytest.raises(FloatingPointError):  # the hidden layer overflows to Inf
        fm.forward(np.full((2, 2), 1e300), 1)


class Recorder:
    """A tracker that keeps what the hook is given."""

    def __init__(self):
        self.calls = []

    def linear(self, node, h, e, C, z):
        self.calls.append(("linear", node.output, h.copy(), e.copy(), C.copy(), z.copy()))

    def other(self, node, args, y):
        self.calls.append(("other", node.output, [a.copy() for a in args], y.copy()))


@pytest.mark.parametrize("kind", ["conv", "pool", "res", "wide"])
def test_the_bound_hook_sees_what_the_reference_pass_gives_it(kind):
    rng = np.random.default_rng(2)
    graph = {"conv": conv_chain, "pool": pool_chain, "res": res_chain,
             "wide": wide_chain}[kind](rng, ACTS[2])
    X = rng.standard_normal((4,) + graph.input_shape)
    weights = {n.output: NodeWeights(n, 7, 3) for n in graph.linear}
    from lrmpi.nn.quantized import linear_at
    for r in (1, 2):
        want, got = Recorder(), Recorder()

        def lin(nd, h):  # the reference pass with the hook, as certify feeds it
            e, C, z = linear_at(nd, h, weights[nd.output], r, 7)
            want.linear(nd, h, e, C, z)
            return z
        ref = ops.forward(graph, X, lin, after=want.other)
        out = FusedModel(graph, weights, 7).forward(X, r, got)
        _same(out, ref)
        assert [c[:2] for c in got.calls] == [c[:2] for c in want.calls]
        for a, b in zip(got.calls, want.calls):
            for x, y in zip(a[2:], b[2:]):
                for u, v in zip(x if isinstance(x, list) else [x], y if isinstance(y, list) else [y]):
                    _same(u, v)


@pytest.mark.parametrize("isa", ISAS)
def test_outputs_past_the_cache_are_the_same_bits(isa):
    """A call whose float64 outputs pass 2 MiB each writes them with streaming stores
    (nn_x86.c, NN_STREAM_BYTES): the hook sees the same bits as from calls of 8
    samples (cached stores), for a conv's positions and a dense layer's rows."""
    rng = np.random.default_rng(8)
    graph = G.sequential([
        ("conv", {"W": rng.standard_normal((32, 3, 3, 3)), "b": rng.standard_normal(32),
                  "pads": (1, 1, 1, 1)}), ("relu", {}),
        ("maxpool", {"kernel": (2, 2), "strides": (2, 2)}), ("flatten", {}),
        ("linear", {"W": rng.standard_normal((512, 32 * 8 * 8)) / 40,
                    "b": rng.standard_normal(512)}), ("relu", {}),
        ("linear", {"W": rng.standard_normal((10, 512)) / 20, "b": rng.standard_normal(10)})],
        (3, 16, 16))
    n = 520   # 520 x 32 x 16 x 16 and 520 x 512 float64 values: past 2 MiB each
    X = rng.standard_normal((n,) + graph.input_shape)
    weights = {nd.output: NodeWeights(nd, 7, 2) for nd in graph.linear}
    fm = FusedModel(graph, weights, 7, isa)
    for r in (1, 2):
        whole, parts = Recorder(), []
        out = fm.forward(X, r, whole)
        pieces = [fm.forward(X[i:i + 8], r, parts.append(Recorder()) or parts[-1])
                  for i in range(0, n, 8)]
        _same(out, np.concatenate(pieces))
        for k, call in enumerate(whole.calls):
            for j, arr in enumerate(call[2:]):
                for u, *vs in zip(arr if isinstance(arr, list) else [arr],
                                  *[p.calls[k][2 + j] if isinstance(arr, list)
                                    else [p.calls[k][2 + j]] for p in parts]):
                    _same(u, np.concatenate(vs))


def test_grouped_convs_fall_back_and_stay_exact():
    rng = np.random.default_rng(4)
    graph = G.sequential([("conv", {"W": rng.standard_normal((6, 2, 3, 3)), "b": rng.standard_normal(6),
                                    "group": 2}), ("relu", {}), ("flatten", {}),
                          ("linear", {"W": rng.standard_normal((3, 6 * 4 * 4)),
                                      "b": rng.standard_normal(3)})], (4, 6, 6))
    weights = {n.output: NodeWeights(n, 7, 2) for n in graph.linear}
    fm = FusedModel(graph, weights, 7)
    assert not fm.nodes["t0"].supported
    X = rng.standard_normal((3, 4, 6, 6))
    for r in (1, 2):
        _same(fm.forward(X, r), _exact(graph, weights, X, r))


def test_a_layer_too_long_for_the_kernels_at_r_computes_what_it_would_have_absorbed():
    """A dense layer of k inputs that the kernels take at r = 1, 2 but not at r = 3
    (r k 127^2 >= 2^31): at r = 3 it goes through quantized.linear_at, and the ReLU the
    kernels would have applied in its call, and the next node's planes, are made as
    for any node (they were skipped: the ReLU's tracker call got nothing and failed)."""
    from lrmpi.nn.engine import PreparedModel
    rng = np.random.default_rng(8)
    k = 45000
    graph = G.sequential([("linear", {"W": rng.standard_normal((8, k)) / 100,
                                      "b": rng.standard_normal(8)}), ("relu", {}),
                          ("linear", {"W": rng.standard_normal((4, 8)),
                                      "b": rng.standard_normal(4)})], (k,))
    weights = {n.output: NodeWeights(n, 7, 3) for n in graph.linear}
    fm = FusedModel(graph, weights, 7)
    first = graph.linear[0].output
    assert fm.nodes[first].takes(2, 7) and not fm.nodes[first].takes(3, 7)
    X = rng.standard_normal((3, k))
    for r in (2, 3):
        _same(fm.forward(X, r), forward_at(graph, weights, X, r, 7))
    model = PreparedModel(graph, 7, 3)
    logits, radius = model.evaluate(X, 3)
    _same(logits, forward_at(graph, weights, X, 3, 7))
    assert np.all(np.abs(logits - ops.forward(graph, X)) <= radius)


def test_a_sample_is_the_same_in_any_batch():
    rng = np.random.default_rng(6)
    graph = conv_chain(rng, ACTS[3])
    X = rng.standard_normal((40,) + graph.input_shape)
    weights = {n.output: NodeWeights(n, 7, 2) for n in graph.linear}
    fm = FusedModel(graph, weights, 7)
    whole = fm.forward(X, 2)
    for i in (0, 17, 39):
        _same(fm.forward(X[i:i + 1], 2), whole[i:i + 1])
    _same(np.concatenate([fm.forward(X[i:i + 7], 2) for i in range(0, 40, 7)]), whole)


class NormRecorder(Recorder):
    """Asks for every array and the kernels' norms."""

    wants = frozenset(("h", "C", "z", "y", "norms"))

    def linear(self, node, h, e, C, z, norms=None):
        self.calls.append(("linear", node.output, h.copy(), e.copy(), C.copy(), z.copy(), norms))

    def other(self, node, args, y, norms=None):
        self.calls.append(("other", node.output, [a.copy() for a in args], y.copy(), norms))


def _exact_sq(x):
    """Exact sum of squares per sample (Fractions)."""
    return [sum((Fraction(float(v)) ** 2 for v in row), Fraction(0)) for row in x.reshape(len(x), -1)]


def _above(bounds, exact_sq):
    for b, s in zip(bounds, exact_sq):
        assert Fraction(float(b)) ** 2 >= s
        assert float(b) <= float(s) ** 0.5 * (1 + 1e-12) + 1e-300  # and tight


@pytest.mark.parametrize("isa", ISAS)
def test_the_kernels_norms_bound_the_hooks_values(isa):
    """norms["h"], ["dq"], ["C"], ["z"], ["y"] are upper bounds (exactly checked) on the
    l2 norms of h, h - Q_r(h), C, z and the activation, and tight."""
    rng = np.random.default_rng(8)
    for graph in (dense_chain(rng, ACTS[1]), conv_chain(rng, ACTS[2]), pool_chain(rng, ACTS[0]),
                  res_chain(rng, ACTS[1]), wide_chain(rng, ACTS[2])):
        X = rng.standard_normal((4,) + graph.input_shape) * \
            np.array([1e-150, 1.0, 3e5, 1e150]).reshape((4,) + (1,) * len(graph.input_shape))
        weights = {n.output: NodeWeights(n, 7, 3) for n in graph.linear}
        for r in (1, 3):
            rec = NormRecorder()
            FusedModel(graph, weights, 7, isa=isa).forward(X, r, rec)
            seen = 0
            for call in rec.calls:
                if call[0] != "linear" or call[-1] is None:
                    continue
                _, _, h, e, C, z, norms = call
                step = np.ldexp(1.0, e.astype(np.int64) - 7 * r).reshape((-1,) + (1,) * (h.ndim - 1))
                res = h - np.trunc(h / step) * step  # exact: the truncation at 2^(e - b r)
                _above(norms["h"], _exact_sq(h))
                _above(norms["dq"], _exact_sq(res))
                _above(norms["C"], _exact_sq(C))
                _above(norms["z"], _exact_sq(z))
                seen += 1
            for call in rec.calls:
                if call[0] == "other" and call[-1] is not None:
                    _above(call[-1]["y"], _exact_sq(call[3]))
                    for bound, arg in zip(call[-1].get("args", []), call[2]):
                        _above(bound, _exact_sq(arg))
            assert seen == len(graph.linear) - sum(not fn.takes(r, 7) for fn in
                                                   FusedModel(graph, weights, 7).nodes.values())


def test_float32_samples_are_quantized_as_given():
    """float32 batches (as data files hold them) go to the quantizer without a float64
    copy: the same bits as their float64 values."""
    rng = np.random.default_rng(9)
    for graph in (dense_chain(rng, ACTS[0]), conv_chain(rng, ACTS[3])):
        X = rng.standard_normal((6,) + graph.input_shape).astype(np.float32)
        weights = {n.output: NodeWeights(n, 7, 2) for n in graph.linear}
        fm = FusedModel(graph, weights, 7)
        for r in (1, 2):
            _same(fm.forward(X, r), forward_at(graph, weights, X.astype(np.float64), r, 7))
