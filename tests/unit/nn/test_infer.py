"""Layered inference: exactness per resolution, adaptive decisions, bounds, models."""
import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("sklearn")

from lrmpi.errors import ConfigError, InputError  # noqa: E402
from lrmpi.experiments import digits  # noqa: E402
from lrmpi.nn import model as M  # noqa: E402
from lrmpi.nn.infer import LayeredInference  # noqa: E402
from lrmpi.nn.onnx_import import load_model  # noqa: E402


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo")
    out = {}
    for kind in ("mlp10", "mlp2", "cnn"):
        path = d / f"{kind}.onnx"
        X, y = digits.cnn_onnx(path) if kind == "cnn" else \
            digits.mlp_onnx(path, binary=kind == "mlp2")
        out[kind] = (load_model(str(path)), X, y, path)
    return out


def leaky_avg_model(rng):
    """Conv -> LeakyReLU -> AvgPool -> Flatten -> Dense -> LeakyReLU -> Dense -> Sigmoid."""
    return M.Model([
        M.Conv2d(rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3), (1, 1), (0, 0, 0, 0)),
        M.LeakyReLU(0.1), M.AvgPool((2, 2), (2, 2)), M.Flatten(),
        M.Dense(rng.standard_normal((5, 18)), rng.standard_normal(5)), M.LeakyReLU(0.2),
        M.Dense(rng.standard_normal((1, 5)), rng.standard_normal(1)), M.Sigmoid(),
    ], (2, 6, 8))


def model_and_data(kind, zoo, rng):
    if kind == "leaky":
        return leaky_avg_model(rng), rng.standard_normal((40, 2, 6, 8))
    return zoo[kind][:2]


@pytest.mark.parametrize("kind", ["mlp10", "mlp2", "cnn", "leaky"])
def test_each_resolution_equals_the_one_shot_pass_on_truncated_operands(kind, zoo, rng):
    model, X = model_and_data(kind, zoo, rng)
    li = LayeredInference(model, X, planes=4, adaptive=False)
    out = list(li)
    assert len(out) == 4
    for r in out:
        np.testing.assert_allclose(r.scores, li.one_shot(r.index), rtol=1e-10, atol=1e-13)
        assert r.refined.all()


@pytest.mark.parametrize("kind", ["mlp10", "mlp2", "cnn", "leaky"])
def test_bounds_cover_the_distance_to_full_precision(kind, zoo, rng):
    model, X = model_and_data(kind, zoo, rng)
    li = LayeredInference(model, X, planes=4, adaptive=False)
    exact = M.forward(model, X.reshape((len(X),) + li.sample_shape))
    prev = np.inf
    for r in li:
        err = np.abs(r.scores - exact).max(axis=1)
        assert np.all(r.bound >= err), f"resolution {r.index}"
        assert r.bound.max() <= prev
        prev = r.bound.max()


@pytest.mark.parametrize("kind", ["mlp10", "mlp2", "cnn"])
def test_adaptive_freezes_samples_with_the_full_resolution_decision(kind, zoo):
    model, X, y, _ = zoo[kind]
    full = list(LayeredInference(model, X, planes=4, adaptive=False))[-1]
    adaptive = list(LayeredInference(model, X, planes=4, adaptive=True))
    last = adaptive[-1]
    # every sample's final decision equals the full-resolution one on this data
    assert np.array_equal(last.predicted, full.predicted)
    work = sum(r.work for r in adaptive) / sum(r.work_all for r in adaptive)
    assert work < 0.5  # most samples freeze after resolution 1
    assert (last.predicted == y).mean() > 0.85


def test_npz_round_trip(zoo, tmp_path):
    model, X, _, _ = zoo["cnn"]
    M.save(model, tmp_path / "m.npz")
    again = load_model(str(tmp_path / "m.npz"))
    np.testing.assert_array_equal(M.forward(model, X), M.forward(again, X))


def _onnx_with(tmp_path, node_op, **attrs):
    from onnx import TensorProto, helper, numpy_helper
    W = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    nodes = [helper.make_node("Gemm", ["x", "W"], ["z"], transB=1, name="fc"),
             helper.make_node(node_op, ["z"], ["y"], name="odd", **attrs)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [None, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], [W])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    return str(path)


def test_unsupported_operator_names_the_node(tmp_path):
    with pytest.raises(InputError, match=r"node odd \(Tanh\): unsupported ONNX operator 'Tanh'"):
        load_model(_onnx_with(tmp_path, "Tanh"))


def test_truncated_onnx_is_a_clear_error(zoo, tmp_path):
    data = zoo["mlp10"][3].read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable ONNX model"):
        load_model(str(bad))


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    import onnx
    from onnx import external_data_helper
    path = _onnx_with(tmp_path, "Relu")
    proto = onnx.load(path)
    external_data_helper.set_external_data(proto.graph.initializer[0], location="../outside.bin")
    proto.graph.initializer[0].data_location = onnx.TensorProto.EXTERNAL
    proto.graph.initializer[0].ClearField("raw_data")
    (tmp_path / "evil.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(InputError, match="outside the model's folder"):
        load_model(str(tmp_path / "evil.onnx"))


def test_bad_data_and_options(zoo):
    model, X, _, _ = zoo["mlp10"]
    with pytest.raises(InputError, match="the model expects"):
        LayeredInference(model, X[:, :10])
    bad = X.copy()
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="data: contains NaN or Inf"):
        LayeredInference(model, bad)
    with pytest.raises(ConfigError, match="gray zone"):
        LayeredInference(model, X, gray=(0.7, 0.2))
    with pytest.raises(InputError, match="no such file"):
        load_model("/nonexistent/m.onnx")
