"""Inference refuses what it would misread, in one line (issue #24: D18, D19,
D24b): several score outputs unless one is chosen by name, several data inputs,
data of another shape than the model's (but for the documented flat vector),
unsupported operators by name (LSTM too), unnamed nodes by their op and output."""
import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_graphs import model, node, ort_run  # noqa: E402

from lrmpi.errors import InputError  # noqa: E402
from lrmpi.nn import graph as G  # noqa: E402
from lrmpi.nn import ops  # noqa: E402
from lrmpi.nn.engine import LayeredInference  # noqa: E402
from lrmpi.nn.onnx_import import load_model  # noqa: E402

F = np.float32


def two_outputs(tmp_path):
    """A hidden ReLU and the logits, both float outputs (D18)."""
    rng = np.random.default_rng(0)
    nodes = [node("Gemm", ["x", "W1"], "h", transB=1), node("Relu", ["h"], "hidden"),
             node("Gemm", ["hidden", "W2"], "logits", transB=1)]
    inits = {"W1": rng.standard_normal((6, 4)).astype(F),
             "W2": rng.standard_normal((3, 6)).astype(F)}
    return model(tmp_path / "two.onnx", nodes, inits, (4,), outputs=("hidden", "logits"))


def test_several_float_outputs_are_refused_unless_one_is_chosen(tmp_path):
    path = two_outputs(tmp_path)
    with pytest.raises(InputError, match=r"the model has 2 outputs \('hidden', 'logits'\); "
                                         r"choose the one holding the scores with "
                                         r"--model-output NAME"):
        load_model(path)
    g = load_model(path, "logits")
    assert g.outputs == 3
    X = np.random.default_rng(1).standard_normal((5, 4))
    np.testing.assert_allclose(ops.forward(g, X), ort_run(path, X, ["logits"])[0], rtol=1e-5)
    assert load_model(path, "hidden").outputs == 6
    with pytest.raises(InputError, match=r"no output named 'probs' \(the model's outputs: "
                                         r"'hidden', 'logits'\)"):
        load_model(path, "probs")


def test_an_integer_label_output_is_not_a_score(tmp_path):
    from onnx import TensorProto, helper
    nodes = [node("Gemm", ["x", "W"], "z", transB=1), node("ArgMax", ["z"], "label", axis=1),
             node("Softmax", ["z"], "p", axis=1)]
    label = helper.make_tensor_value_info("label", TensorProto.INT64, None)
    path = model(tmp_path / "m.onnx", nodes, {"W": np.ones((3, 4), F)}, (4,),
                 outputs=(label, "p"))
    g = load_model(path)
    assert (g.output, g.head, g.outputs) == ("z", "softmax", 3)


def test_several_data_inputs_are_refused_by_name(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    g = helper.make_graph(
        [node("Add", ["a", "b"], "s"), node("Gemm", ["s", "W"], "y", transB=1)], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((2, 4), F), "W")])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(InputError, match=r"the model has 2 data inputs \('a', 'b'\); "
                                         r"lrmpi takes one"):
        load_model(str(path))


def test_lstm_is_refused_by_name_not_by_its_sequence_axis(tmp_path):
    """The input of a recurrent model has an unknown sequence length: the operator,
    not that, is what lrmpi cannot take (D24b)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    H, D = 4, 3
    g = helper.make_graph(
        [helper.make_node("LSTM", ["x", "W", "R"], ["", "h"], hidden_size=H, name="enc")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", None, D])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.standard_normal((1, 4 * H, D)).astype(F), "W"),
         numpy_helper.from_array(rng.standard_normal((1, 4 * H, H)).astype(F), "R")])
    path = tmp_path / "lstm.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(InputError, match=r"node enc \(LSTM\): LSTM is a recurrent operator"):
        load_model(str(path))


def test_an_unnamed_node_is_shown_by_its_op_and_output(tmp_path):
    nodes = [node("Gemm", ["x", "W"], "z", transB=1), node("Tanh", ["z"], "y", name="")]
    path = model(tmp_path / "m.onnx", nodes, {"W": np.ones((3, 4), F)}, (4,))
    with pytest.raises(InputError, match=r"the Tanh node writing 'y': Tanh is not piecewise"):
        load_model(path)


def test_data_of_another_shape_is_refused_not_reshaped():
    """Exactly the model's shape per sample, or a flat vector of its size (C order);
    (4, 4, 4) for (16,) and (2, 32) for (4, 4, 2)... no (D19)."""
    rng = np.random.default_rng(2)
    flat = G.sequential([("linear", {"W": rng.standard_normal((3, 16)), "b": np.zeros(3)})],
                        (16,))
    img = G.sequential([("conv", {"W": rng.standard_normal((2, 1, 3, 3)), "b": np.zeros(2)}),
                        ("flatten", {}), ("linear", {"W": rng.standard_normal((3, 72)),
                                                     "b": np.zeros(3)})], (1, 8, 8))
    with pytest.raises(InputError, match=r"samples of shape \(4, 4\), the model expects "
                                         r"\(16,\) \(or a flat vector of 16 values"):
        LayeredInference(flat, np.ones((4, 4, 4)))
    with pytest.raises(InputError, match=r"samples of shape \(8, 8\), the model expects "
                                         r"\(1, 8, 8\)"):
        LayeredInference(img, np.ones((12, 8, 8)))
    with pytest.raises(InputError, match=r"one sample\? give it the samples axis: shape "
                                         r"\(1, 1, 8, 8\)"):
        LayeredInference(img, np.ones((1, 8, 8)))
    X = rng.standard_normal((12, 1, 8, 8))
    a = LayeredInference(img, X.reshape(12, 64), planes=1)   # the documented flat vector
    np.testing.assert_array_equal(a.X, X)


@pytest.mark.parametrize("name, outcome", [
    ("squeezenet", 1000), ("densenet121", 1000), ("resnet50", 1000), ("inception_v2", 1000),
    ("shufflenet", 1000), ("vgg19", 1000),
    ("bvlc_alexnet", "LRN"), ("zfnet512", "LRN"), ("inception_v1", "LRN")])
def test_the_zoo_s_classic_graphs_import_or_are_refused_by_name(name, outcome):
    """As the ONNX package ships them (weights made by ConstantOfShape, batch 1 in the
    input and in Reshape targets): the README's list of what runs and what not."""
    from onnx_graphs import zoo_source
    path = zoo_source(name)
    if outcome == "LRN":
        with pytest.raises(InputError, match=r"node \w+ \(LRN\): LRN is not piecewise linear"):
            load_model(path)
        return
    g = load_model(path)
    assert g.outputs == outcome and g.input_shape == (3, 224, 224)
