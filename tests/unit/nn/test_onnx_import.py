"""The ONNX importer keeps the graph and every operator of the models users bring;
what it cannot take is one clear error naming the node."""
import numpy as np
import pytest

pytest.importorskip("onnx")

from lrmpi.errors import InputError  # noqa: E402
from lrmpi.nn import graph as G  # noqa: E402
from lrmpi.nn import ops  # noqa: E402
from lrmpi.nn.onnx_import import load_model  # noqa: E402


def _model(tmp_path, nodes, inits, in_shape, out="y", out_dim=None):
    from onnx import TensorProto, helper, numpy_helper
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, *in_shape])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
                     .SerializeToString())
    return str(path)


def _node(op, ins, out, name=None, **attrs):
    from onnx import helper
    return helper.make_node(op, ins, [out], name=name or out, **attrs)


def _ort(path, X):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(
        None, {"x": X.astype(np.float32)})[0]


def test_graph_operators_agree_with_onnxruntime(tmp_path, rng):
    """Residual Add, Concat, BatchNormalization folded and as an affine node, Pad,
    Clip, PRelu, GlobalMaxPool, the Shape-Gather-Unsqueeze-Concat-Reshape flatten,
    MatMul + Add, an ArgMax label branch (ignored)."""
    f = np.float32
    C = 3
    inits = {"W1": rng.standard_normal((C, C, 3, 3)).astype(f),
             "s": (1 + 0.1 * rng.standard_normal(C)).astype(f),
             "bb": (0.1 * rng.standard_normal(C)).astype(f),
             "m": (0.1 * rng.standard_normal(C)).astype(f),
             "v": (1 + rng.random(C)).astype(f),
             "pads": np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64),
             "lo": np.array(0, f), "hi": np.array(6, f),
             "slope": rng.uniform(0, 0.3, (C, 1, 1)).astype(f),
             "i0": np.array(0, np.int64), "ax": np.array([0], np.int64),
             "m1": np.array([-1], np.int64),
             "Wm": rng.standard_normal((2 * C, 4)).astype(f), "bm": rng.standard_normal(4).astype(f)}
    nodes = [_node("Conv", ["x", "W1"], "c1", pads=[1, 1, 1, 1]),
             _node("BatchNormalization", ["c1", "s", "bb", "m", "v"], "n1"),   # folded
             _node("Relu", ["n1"], "r1"),
             _node("Add", ["r1", "x"], "sum"),                                  # residual
             _node("BatchNormalization", ["sum", "s", "bb", "m", "v"], "n2"),  # affine
             _node("Pad", ["n2", "pads"], "pd"),
             _node("Clip", ["pd", "lo", "hi"], "cl"),
             _node("PRelu", ["cl", "slope"], "pr"),
             _node("Concat", ["pr", "pd"], "cc", axis=1),
             _node("GlobalMaxPool", ["cc"], "gm"),
             _node("Shape", ["gm"], "sh"), _node("Gather", ["sh", "i0"], "g0", axis=0),
             _node("Unsqueeze", ["g0", "ax"], "u0"), _node("Concat", ["u0", "m1"], "tg", axis=0),
             _node("Reshape", ["gm", "tg"], "flat"),
             _node("MatMul", ["flat", "Wm"], "mm"), _node("Add", ["mm", "bm"], "logits"),
             _node("ArgMax", ["logits"], "label", axis=1),
             _node("Softmax", ["logits"], "y", axis=1)]
    path = _model(tmp_path, nodes, inits, (C, 5, 5))
    g = load_model(path)
    ops_used = [n.op for n in g.nodes]
    assert ops_used == ["conv", "relu", "add", "affine", "affine", "pad", "clip", "prelu",
                        "concat", "maxpool", "flatten", "linear"]
    assert g.head == "softmax"
    X = rng.standard_normal((20, C, 5, 5))
    np.testing.assert_allclose(ops.scores(g, ops.forward(g, X)), _ort(path, X), atol=2e-5)


def test_npz_round_trip(tmp_path, rng):
    g = G.sequential([("conv", {"W": rng.standard_normal((2, 1, 3, 3)), "b": np.zeros(2),
                                "pads": (1, 1, 1, 1)}), ("relu", {}), ("flatten", {}),
                      ("linear", {"W": rng.standard_normal((3, 32)), "b": np.ones(3)})],
                     (1, 4, 4), head="softmax")
    G.save(g, tmp_path / "m.npz")
    again = load_model(str(tmp_path / "m.npz"))
    X = rng.standard_normal((5, 1, 4, 4))
    np.testing.assert_array_equal(ops.forward(g, X), ops.forward(again, X))


@pytest.mark.parametrize("op, why", [("Tanh", "Tanh is not piecewise linear"),
                                     ("Erf", "Erf is not piecewise linear"),
                                     ("Hardmax", "unsupported ONNX operator 'Hardmax'")])
def test_an_operator_outside_the_set_names_the_node_and_why(tmp_path, op, why):
    path = _model(tmp_path, [_node("Gemm", ["x", "W"], "z", transB=1),
                             _node(op, ["z"], "y", name="odd")],
                  {"W": np.ones((3, 4), np.float32)}, (4,))
    with pytest.raises(InputError, match=rf"node odd \({op}\): {why}"):
        load_model(path)


def test_truncated_and_missing_models(tmp_path):
    path = _model(tmp_path, [_node("Gemm", ["x", "W"], "y", transB=1)],
                  {"W": np.ones((3, 4), np.float32)}, (4,))
    with open(path, "rb") as f:
        data = f.read()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable ONNX model"):
        load_model(str(bad))
    with pytest.raises(InputError, match="no such file"):
        load_model("/nonexistent/m.onnx")


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    import onnx
    from onnx import external_data_helper
    path = _model(tmp_path, [_node("Gemm", ["x", "W"], "y", transB=1)],
                  {"W": np.ones((3, 4), np.float32)}, (4,))
    proto = onnx.load(path)
    external_data_helper.set_external_data(proto.graph.initializer[0], location="../outside.bin")
    proto.graph.initializer[0].data_location = onnx.TensorProto.EXTERNAL
    proto.graph.initializer[0].ClearField("raw_data")
    (tmp_path / "evil.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(InputError, match="outside the model's folder"):
        load_model(str(tmp_path / "evil.onnx"))


def _classifier_end(tmp_path, kind, rng):
    """Heads as zoo exporters write them: SqueezeNet's conv-relu-global pool-softmax
    (opset 9: softmax flattens from axis 1), DenseNet's global pool then a 1 x 1
    conv, a single-logit sigmoid; outputs of shape (N, K, 1, 1)."""
    from onnx_graphs import model, node
    f = np.float32
    inits = {"W": rng.standard_normal((5, 3, 3, 3)).astype(f),
             "W1": rng.standard_normal((4, 5, 1, 1)).astype(f),
             "b1": rng.standard_normal(4).astype(f),
             "Ws": rng.standard_normal((1, 5, 1, 1)).astype(f)}
    conv = node("Conv", ["x", "W"], "c", pads=[1, 1, 1, 1])
    nodes, opset = {
        "squeezenet": ([conv, node("Conv", ["c", "W1", "b1"], "c1"), node("Relu", ["c1"], "r"),
                        node("GlobalAveragePool", ["r"], "g"), node("Softmax", ["g"], "y", axis=1)],
                       9),
        "densenet": ([conv, node("Relu", ["c"], "r"), node("GlobalAveragePool", ["r"], "g"),
                      node("Conv", ["g", "W1", "b1"], "y")], 13),
        "sigmoid": ([conv, node("GlobalAveragePool", ["c"], "g"), node("Conv", ["g", "Ws"], "z"),
                     node("Sigmoid", ["z"], "y")], 13),
        "softmax-last-axis": ([conv, node("GlobalAveragePool", ["c"], "g"),
                               node("Conv", ["g", "W1"], "z"), node("Softmax", ["z"], "y")], 13),
    }[kind]
    return model(tmp_path / f"{kind}.onnx", nodes, inits, (3, 6, 6), opset=opset)


@pytest.mark.parametrize("kind, k, head, last", [("squeezenet", 4, "softmax", "globalavgpool"),
                                                 ("densenet", 4, None, "linear"),
                                                 ("sigmoid", 1, "sigmoid", "linear")])
def test_outputs_of_shape_k_1_1_are_k_scores(tmp_path, rng, kind, k, head, last):
    path = _classifier_end(tmp_path, kind, rng)
    g = load_model(path)
    assert (g.outputs, g.head, g.nodes[-1].op) == (k, head, last)
    X = rng.standard_normal((7, 3, 6, 6))
    want = _ort(path, X).reshape(7, k)
    np.testing.assert_allclose(ops.scores(g, ops.forward(g, X)), want, rtol=1e-5, atol=1e-6)


def test_a_softmax_over_a_size_one_axis_is_refused(tmp_path, rng):
    """opset 13's default axis -1 of (N, K, 1, 1) is a softmax over one value (all
    ones), not over the classes."""
    path = _classifier_end(tmp_path, "softmax-last-axis", rng)
    with pytest.raises(InputError, match=r"Softmax over axis -1 of samples of shape "
                                         r"\(4, 1, 1\) \(only over the classes\)"):
        load_model(path)

