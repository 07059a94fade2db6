"""Fifth adversarial pass, area 5: inference — NaN weights off the score path and on it,
data of the wrong dtype or of a shape that fits only after a reshape, NaN in the last
sample's last value, a conv model given data without its channel axis."""
import numpy as np
import pytest

from adversary import assert_ok, assert_one_error, mlp_onnx, ort_scores, run, save


def scores(out):
    """The last resolution's scores of an inference checkpoint (plain h5py, where written)."""
    import h5py
    with h5py.File(out, "r") as f:
        return f["resolutions"][sorted(f["resolutions"].keys())[-1]]["scores"][()]


def add_dead_branch(src, dst, value=np.nan):
    """`src` plus a MatMul from the input by weights all `value`, whose output nobody uses."""
    import onnx
    from onnx import helper, numpy_helper
    m = onnx.load(src)
    m.graph.initializer.append(numpy_helper.from_array(np.full((16, 5), value, np.float32), "Wd"))
    m.graph.node.append(helper.make_node("MatMul", ["x", "Wd"], ["dead"], name="dead"))
    onnx.save(m, dst)
    return str(dst)


def test_nan_weights_in_an_unused_branch_are_ignored(tmp_path, rng):
    """A node off the path from the input to the scores has NaN weights: the job runs, and
    its scores equal the same model's without that node, bit for bit."""
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    dead = add_dead_branch(m, tmp_path / "dead.onnx")
    d = save(tmp_path / "X.npy", rng.standard_normal((7, 16)).astype(np.float32))
    assert_ok(run("infer", m, d, "-o", tmp_path / "a.h5", "--planes", "2", "--rule", "none"))
    assert_ok(run("infer", dead, d, "-o", tmp_path / "b.h5", "--planes", "2", "--rule", "none"))
    assert np.array_equal(scores(tmp_path / "a.h5"), scores(tmp_path / "b.h5"))


def test_nan_weight_on_the_score_path_named(tmp_path, rng):
    """One NaN in the last entry of the last layer's weights: one line naming the node."""
    import onnx
    from onnx import numpy_helper
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    model = onnx.load(m)
    for init in model.graph.initializer:
        if init.name == "W1":
            w = numpy_helper.to_array(init).copy()
            w[-1, -1] = np.nan
            init.CopyFrom(numpy_helper.from_array(w, "W1"))
    onnx.save(model, tmp_path / "bad.onnx")
    d = save(tmp_path / "X.npy", rng.standard_normal((4, 16)))
    r = run("infer", tmp_path / "bad.onnx", d, "-o", tmp_path / "s.h5")
    assert_one_error(r, code=1, contains=("gemm1",))
    assert not (tmp_path / "s.h5").exists()


def test_inf_bias_in_a_dead_branch_and_nan_sample_last(tmp_path, rng):
    """Inf weights off the path do not matter; a NaN as the very last value of the last
    sample is refused (one line, exit 1) under `mpiexec -n 3`."""
    m = add_dead_branch(mlp_onnx(tmp_path / "m.onnx", rng), tmp_path / "inf.onnx", np.inf)
    X = rng.standard_normal((5, 16))
    X[-1, -1] = np.nan
    r = run("infer", m, save(tmp_path / "X.npy", X), "-o", tmp_path / "s.h5", n=3)
    assert_one_error(r, code=1, contains=("data", "nan"))
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("make", [
    lambda X: X > 0,
    lambda X: X.astype(np.complex128),
    lambda X: X.astype("datetime64[s]"),
    lambda X: np.zeros(X.shape, dtype=[("v", "f4")]),
])
def test_data_of_a_non_real_dtype_one_line(tmp_path, rng, make):
    """bool, complex, datetime and structured data: one line naming the data, exit 1."""
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    X = rng.standard_normal((4, 16))
    d = save(tmp_path / "X.npy", make(X))
    r = run("infer", m, d, "-o", tmp_path / "s.h5")
    assert_one_error(r, code=1, contains=("data",))
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("shape", [(6, 4, 4), (3, 32), (6, 16, 1), (1, 6, 16), (96,)])
def test_data_that_fits_only_after_a_reshape_refused(tmp_path, rng, shape):
    """96 values for a model of 16 inputs, laid out as (6, 4, 4), (3, 32), (6, 16, 1),
    (1, 6, 16) or (96,): none is (N, 16), so each is refused with one line, never reshaped."""
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    d = save(tmp_path / "X.npy", rng.standard_normal(shape))
    r = run("infer", m, d, "-o", tmp_path / "s.h5")
    assert_one_error(r, code=1, contains=("data",))
    assert not (tmp_path / "s.h5").exists()


def conv_onnx(path, rng):
    """Conv(1->3, 3x3) + ReLU + GlobalAveragePool + Flatten + Gemm(3->4) on (N, 1, 6, 6)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    W = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    W2 = rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "W2"], ["y"], name="fc")]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(W2, "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_conv_data_without_channel_axis_refused_flat_accepted(tmp_path, rng):
    """A (N, 1, 6, 6) model: data (N, 6, 6) (channel axis missing) and (N, 6, 6, 1)
    (channels last) are refused; (N, 36) flat and (N, 1, 6, 6) give the same scores, which
    equal onnxruntime's decisions."""
    m = conv_onnx(tmp_path / "c.onnx", rng)
    X = rng.standard_normal((5, 1, 6, 6)).astype(np.float32)
    for bad in (X.reshape(5, 6, 6), X.reshape(5, 6, 6, 1)):
        r = run("infer", m, save(tmp_path / "bad.npy", bad), "-o", tmp_path / "bad.h5")
        assert_one_error(r, code=1, contains=("data",))
    assert_ok(run("infer", m, save(tmp_path / "X.npy", X), "-o", tmp_path / "a.h5",
                  "--planes", "3", "--rule", "none"))
    assert_ok(run("infer", m, save(tmp_path / "F.npy", X.reshape(5, 36)), "-o",
                  tmp_path / "b.h5", "--planes", "3", "--rule", "none"))
    Sa, Sb = scores(tmp_path / "a.h5"), scores(tmp_path / "b.h5")
    assert np.array_equal(Sa, Sb)
    ref = ort_scores(m, X)
    assert np.abs(Sa - ref).max() < 1e-3 * (np.abs(ref).max() + 1)


def test_int_data_from_h5_with_fortran_layout_equals_float_data(tmp_path, rng):
    """int16 data read from an HDF5 dataset and the same values as Fortran-ordered float64
    `.npy`: the same scores, bit for bit, under `mpiexec -n 2`."""
    import h5py
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    X = rng.integers(-50, 50, (9, 16)).astype(np.int16)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("X", data=X, chunks=(4, 16), compression="gzip")
    f64 = save(tmp_path / "X.npy", np.asfortranarray(X.astype(np.float64)))
    assert_ok(run("infer", m, f"{tmp_path}/d.h5:/X", "-o", tmp_path / "a.h5", "--planes", "2",
                  n=2))
    assert_ok(run("infer", m, f64, "-o", tmp_path / "b.h5", "--planes", "2"))
    assert np.array_equal(scores(tmp_path / "a.h5"), scores(tmp_path / "b.h5"))
