"""Data-movement operators (Transpose, Reshape, Squeeze, Unsqueeze, Split, Slice,
Gather on constant indices) on the per-sample axes: exact on digit planes (bit
for bit the exact integer network), inside the bounds, as onnxruntime computes
them; along the batch axis, one error naming the node."""
from fractions import Fraction

import numpy as np
import pytest
from exact import exact_linear, exact_model_logits

from lrmpi.nn import graph as G
from lrmpi.nn import ops
from lrmpi.nn.engine import PreparedModel
from lrmpi.nn.fused import FusedModel
from lrmpi.nn.operators import gather_repeats
from lrmpi.nn.quantized import NodeWeights, forward_at
from lrmpi.numerics import kernels


def _models(rng):
    def conv(o, c, k=3, pad=1):
        return {"W": rng.standard_normal((o, c, k, k)) / k, "b": rng.standard_normal(o) * 0.1,
                "pads": (pad,) * 4}
    # a channel shuffle (ShuffleNet), a reversing strided slice, a gather with a
    # repeated index, and a (K, 1, 1) output from a 1 x 1 convolution
    shuffle = [G.Node("conv", ["x"], "a", conv(4, 4)),
               G.Node("reshape", ["a"], "g5", {"shape": (2, 2, 4, 4)}),
               G.Node("transpose", ["g5"], "t5", {"perm": (1, 0, 2, 3)}),
               G.Node("reshape", ["t5"], "sh", {"shape": (4, 4, 4)}),
               G.Node("slice", ["sh"], "sl", {"axes": (1, 2), "starts": (0, -1),
                                                "stops": (3, -100), "steps": (1, -2)}),
               G.Node("relu", ["sl"], "r"),
               G.Node("gather", ["r"], "ga", {"axis": 0, "indices": (3, 0, 0, 2),
                                               "index_shape": (4,)}),
               G.Node("conv", ["ga"], "b", conv(3, 4)),
               G.Node("globalavgpool", ["b"], "p"),
               G.Node("conv", ["p"], "y", conv(5, 3, k=1, pad=0))]
    g1 = G.Graph("x", (4, 4, 4), shuffle, "y", "softmax").validate()
    # a split into two slices added back, a scalar gather removing an axis, a dense end
    split = [G.Node("conv", ["x"], "a", conv(4, 2)),
             G.Node("slice", ["a"], "s0", {"axes": (0,), "starts": (0,), "stops": (2,),
                                             "steps": (1,)}),
             G.Node("slice", ["a"], "s1", {"axes": (0,), "starts": (2,), "stops": (4,),
                                             "steps": (1,)}),
             G.Node("add", ["s0", "s1"], "s"),
             G.Node("gather", ["s"], "row", {"axis": 1, "indices": (1,), "index_shape": ()}),
             G.Node("transpose", ["row"], "tr", {"perm": (1, 0)}),
             G.Node("flatten", ["tr"], "f"),
             G.Node("linear", ["f"], "y", {"W": rng.standard_normal((3, 10)),
                                           "b": rng.standard_normal(3)})]
    g2 = G.Graph("x", (2, 4, 5), split, "y", "softmax").validate()
    return [("shuffle-slice-gather-conv-out", g1, rng.standard_normal((3, 4, 4, 4))),
            ("split-add-scalar-gather-dense", g2, rng.standard_normal((3, 2, 4, 5)))]


MOVEMENT_MODELS = _models(np.random.default_rng(9))


@pytest.mark.parametrize("name, graph, X", MOVEMENT_MODELS, ids=[m[0] for m in MOVEMENT_MODELS])
@pytest.mark.parametrize("r", [1, 3])
def test_resolution_r_equals_the_exact_integer_network(name, graph, X, r):
    weights = {n.output: NodeWeights(n, 7, 3) for n in graph.linear}
    got = forward_at(graph, weights, X, r, 7)
    want = ops.forward(graph, X, lambda node, h: exact_linear(node, h,
                                                              weights[node.output].enc, r, 7))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa", kernels.available_isas())
@pytest.mark.parametrize("name, graph, X", MOVEMENT_MODELS, ids=[m[0] for m in MOVEMENT_MODELS])
def test_the_fused_pass_takes_movement_nodes_and_k11_logits(name, graph, X, isa):
    """The fused C layers: movement nodes through their Python ops, (K, 1, 1) logits
    of a 1 x 1 conv read as K scores; bit for bit the exact integer network."""
    weights = {n.output: NodeWeights(n, 7, 3) for n in graph.linear}
    fm = FusedModel(graph, weights, 7, isa=isa)
    for r in (1, 2, 3):
        got = fm.forward(X, r)
        want = ops.forward(graph, X, lambda node, h: exact_linear(
            node, h, weights[node.output].enc, r, 7))
        assert got.shape == want.shape == (len(X), graph.outputs)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name, graph, X", MOVEMENT_MODELS, ids=[m[0] for m in MOVEMENT_MODELS])
def test_bounds_cover_the_exact_model(name, graph, X):
    exact = exact_model_logits(graph, X).reshape(len(X), -1)
    model = PreparedModel(graph, 7, 3)
    for r in (1, 2, 3):
        logits, radius = model.evaluate(X, r)
        assert logits.shape == radius.shape == exact.shape
        for n in range(len(X)):
            for j in range(logits.shape[1]):
                assert abs(Fraction(float(logits[n, j])) - exact[n, j]) <= \
                    Fraction(float(radius[n, j])), (r, n, j)


def test_a_repeated_gather_index_counts_in_the_bound():
    p = {"axis": 0, "indices": (3, 0, 0, -4, 2), "index_shape": (5,)}
    assert gather_repeats(p, (4, 2)) == 3        # 0, 0 and -4 are one element
    assert gather_repeats({**p, "indices": (1, 2)}, (4, 2)) == 1


# --- the ONNX operators ---

def _onnx_case(tmp_path, case):
    from onnx_graphs import model, node
    rng = np.random.default_rng(4)
    f = np.float32
    W = rng.standard_normal((4, 2, 3, 3)).astype(f)
    inits = {"W": W, "shape5": np.array([0, 2, 2, 5, 6], np.int64),
             "shape4": np.array([-1, 4, 5, 6], np.int64), "ax": np.array([1], np.int64),
             "st": np.array([0, 5], np.int64), "en": np.array([3, -100], np.int64),
             "axs": np.array([1, 3], np.int64), "stp": np.array([1, -2], np.int64),
             "idx": np.array([[3, 1], [1, 0]], np.int64), "sp": np.array([1, 3], np.int64),
             "flat": np.array([0, -1], np.int64)}
    head = [node("Conv", ["x", "W"], "c", pads=[1, 1, 1, 1])]
    body = {
        "shuffle": [node("Reshape", ["c", "shape5"], "r5"),
                    node("Transpose", ["r5"], "t5", perm=[0, 2, 1, 3, 4]),
                    node("Reshape", ["t5", "shape4"], "y")],
        "squeeze": [node("Unsqueeze", ["c", "ax"], "u"), node("Squeeze", ["u", "ax"], "y")],
        "slice": [node("Slice", ["c", "st", "en", "axs", "stp"], "y")],
        "split": [node("Split", ["c", "sp"], ["s0", "s1"], axis=1),
                  node("Concat", ["s1", "s0"], "y", axis=1)],
        "gather": [node("Gather", ["c", "idx"], "g", axis=2),
                   node("Reshape", ["g", "flat"], "y")],
        "flatten": [node("Transpose", ["c"], "tr", perm=[0, 3, 1, 2]),
                    node("Flatten", ["tr"], "y", axis=1)],
    }[case]
    return model(tmp_path / f"{case}.onnx", head + body, inits, (2, 5, 6))


@pytest.mark.parametrize("case", ["shuffle", "squeeze", "slice", "split", "gather", "flatten"])
def test_onnx_movement_operators_agree_with_onnxruntime(tmp_path, case):
    onnx = pytest.importorskip("onnx")
    from onnx_graphs import ort_run

    from lrmpi.nn import onnx_import
    path = _onnx_case(tmp_path, case)
    X = np.random.default_rng(1).standard_normal((3, 2, 5, 6))
    want = ort_run(path, X)[0]
    # y is not a vector of scores: the graph up to it, without validate()'s check
    imp = onnx_import._Importer(path, onnx.load(path).graph, 17)
    imp.input = imp.data_input()
    for n in imp.needed("y"):
        imp.convert(n)
    g = G.Graph(imp.input, imp.shape[imp.input], imp.prune(imp.name("y")), imp.name("y"))
    assert [n.op for n in g.nodes if n.op != "conv"] == {
        "shuffle": ["reshape", "transpose", "reshape"], "squeeze": ["reshape", "reshape"],
        "slice": ["slice"], "split": ["slice", "slice", "concat"],
        "gather": ["gather", "flatten"], "flatten": ["transpose", "flatten"]}[case]
    _, kept = ops.forward(g, X, keep=[g.output])
    got = kept[g.output]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nodes, match", [
    ([("Transpose", ["c"], "y", {"perm": [1, 0, 2, 3]})],
     r"Transpose with perm \[1, 0, 2, 3\] moves the batch axis"),
    ([("Transpose", ["c"], "y", {})], r"Transpose with perm \[3, 2, 1, 0\] moves"),
    ([("Gather", ["c", "i0"], "y", {"axis": 0})], "Gather along the batch axis"),
    ([("Split", ["c"], ["y", "z"], {})], "Split along the batch axis"),
    ([("Slice", ["c", "i0", "i1", "i0"], "y", {})], "Slice along the batch axis"),
    ([("Squeeze", ["c", "i0"], "y", {})], "Squeeze along the batch axis"),
    ([("Flatten", ["c"], "y", {"axis": 2})], "Flatten with axis 2 merges the samples"),
    ([("Reshape", ["c", "sh"], "y", {})], r"Reshape to \[4, -1\]: the first axis must stay"),
])
def test_movement_along_the_batch_axis_is_refused_naming_the_node(tmp_path, nodes, match):
    pytest.importorskip("onnx")
    from onnx_graphs import model, node

    from lrmpi.errors import InputError
    from lrmpi.nn.onnx_import import load_model
    inits = {"W": np.ones((4, 2, 3, 3), np.float32), "i0": np.array([0], np.int64),
             "i1": np.array([1], np.int64), "sh": np.array([4, -1], np.int64)}
    onnx_nodes = [node("Conv", ["x", "W"], "c")] + [node(op, ins, out, name="mover", **attrs)
                                                    for op, ins, out, attrs in nodes]
    path = model(tmp_path / "m.onnx", onnx_nodes, inits, (2, 5, 6))
    with pytest.raises(InputError, match=rf"node mover \({nodes[0][0]}\): {match}"):
        load_model(path)


@pytest.mark.parametrize("name, graph, X", MOVEMENT_MODELS, ids=[m[0] for m in MOVEMENT_MODELS])
def test_npz_round_trip(tmp_path, name, graph, X):
    G.save(graph, tmp_path / "m.npz")
    again = G.load_npz(str(tmp_path / "m.npz"))
    assert [n.params.keys() for n in again.nodes] == [n.params.keys() for n in graph.nodes]
    np.testing.assert_array_equal(ops.forward(again, X), ops.forward(graph, X))
