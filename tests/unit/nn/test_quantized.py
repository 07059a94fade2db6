"""Resolution r is a well-defined quantized network: equal, bit for bit, to the same
network evaluated with exact Python-integer products (every operator)."""
import numpy as np
import pytest
from exact import exact_linear

from lrmpi.nn import graph as G
from lrmpi.nn import ops
from lrmpi.nn.quantized import NodeWeights, forward_at


def _rand(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def _flat_size(layers, shape):
    return int(np.prod(G.sequential(layers, shape).shapes[f"t{len(layers) - 1}"]))


def models(rng):
    """(name, graph, input batch): one per operator family, tiny."""
    out = []
    d = 12
    out.append(("dense-leaky-sigmoid", G.sequential(
        [("linear", {"W": _rand(rng, 7, d), "b": _rand(rng, 7)}),
         ("leakyrelu", {"alpha": 0.2}),
         ("linear", {"W": _rand(rng, 1, 7), "b": _rand(rng, 1)})], (d,), head="sigmoid"),
        _rand(rng, 5, d) * np.exp(rng.uniform(-3, 3, (5, 1)))))
    # strided, dilated, asymmetric pads; max pooling with pads and ceil_mode; average
    conv = {"W": _rand(rng, 4, 2, 3, 3), "b": _rand(rng, 4), "pads": (1, 0, 2, 1),
            "strides": (2, 1), "dilations": (1, 2)}
    body = [("conv", conv), ("relu", {}),
            ("maxpool", {"kernel": (2, 2), "strides": (1, 1), "pads": (1, 1, 0, 0),
                         "ceil_mode": 1}),
            ("avgpool", {"kernel": (2, 2), "strides": (2, 2), "ceil_mode": 1}),
            ("flatten", {})]
    flat = _flat_size(body, (2, 7, 6))
    out.append(("conv-maxpool-avgpool", G.sequential(
        body + [("linear", {"W": _rand(rng, 3, flat), "b": _rand(rng, 3)})], (2, 7, 6),
        head="softmax"), _rand(rng, 3, 2, 7, 6)))
    # depthwise and grouped convolutions, clip (ReLU6), prelu, global average pool
    dw = {"W": _rand(rng, 4, 1, 3, 3), "b": _rand(rng, 4), "pads": (1, 1, 1, 1), "group": 4}
    gr = {"W": _rand(rng, 6, 2, 3, 3), "b": _rand(rng, 6), "group": 2}
    out.append(("depthwise-grouped-clip-prelu-gap", G.sequential(
        [("conv", dw), ("clip", {"lo": 0.0, "hi": 6.0}), ("conv", gr),
         ("prelu", {"slope": rng.uniform(0, 0.5, (6, 1, 1))}), ("globalavgpool", {}),
         ("flatten", {}), ("linear", {"W": _rand(rng, 5, 6), "b": _rand(rng, 5)})],
        (4, 6, 6), head="softmax"), _rand(rng, 3, 4, 6, 6)))
    # a residual block (fan-out and fan-in), a concat, a pad, per-channel affine
    nodes = [G.Node("conv", ["x"], "a", {"W": _rand(rng, 3, 3, 3, 3), "b": _rand(rng, 3),
                                          "pads": (1, 1, 1, 1)}),
             G.Node("relu", ["a"], "ar"),
             G.Node("conv", ["ar"], "b", {"W": _rand(rng, 3, 3, 1, 1), "b": _rand(rng, 3)}),
             G.Node("add", ["b", "x"], "s"),
             G.Node("affine", ["s"], "t", {"fn": "mul", "c": rng.uniform(0.5, 2, (1, 3, 1, 1))}),
             G.Node("concat", ["t", "ar"], "u"),
             G.Node("pad", ["u"], "v", {"pads": [(0, 0), (1, 0), (0, 2)], "value": 0.0}),
             G.Node("flatten", ["v"], "f")]
    fl = int(np.prod(G.Graph("x", (3, 4, 4), list(nodes), "f").validate().shapes["f"]))
    nodes.append(G.Node("linear", ["f"], "y", {"W": _rand(rng, 4, fl), "b": _rand(rng, 4)}))
    out.append(("residual-concat-pad-affine",
                G.Graph("x", (3, 4, 4), nodes, "y", "softmax").validate(),
                _rand(rng, 3, 3, 4, 4)))
    return out


MODELS = models(np.random.default_rng(7))


@pytest.mark.parametrize("name, graph, X", MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("r", [1, 2, 3])
def test_resolution_r_equals_the_exact_integer_network(name, graph, X, r):
    bits, planes = 7, 3
    weights = {n.output: NodeWeights(n, bits, planes) for n in graph.linear}
    got = forward_at(graph, weights, X, r, bits)
    want = ops.forward(graph, X, lambda node, h: exact_linear(node, h,
                                                              weights[node.output].enc, r, bits))
    np.testing.assert_array_equal(got, want)


def test_samples_are_independent_of_their_batch(rng):
    """A sample's result is the same alone or in any batch: every product is exact
    and every other step elementwise or per sample."""
    name, graph, X = MODELS[2]
    weights = {n.output: NodeWeights(n, 7, 3) for n in graph.linear}
    whole = forward_at(graph, weights, X, 2, 7)
    for i in range(len(X)):
        np.testing.assert_array_equal(forward_at(graph, weights, X[i:i + 1], 2, 7), whole[i:i + 1])
