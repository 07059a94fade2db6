"""Eighth adversarial pass, area 5: inference — odd but valid graphs the earlier passes did
not build (Gather of input features with repeats, Clip with only a minimum, LeakyRelu with
slope 0 and 1, PRelu with negative slopes, constant minus a tensor, Div by a constant, Add
with the bias first, Pad of the features, Concat of a tensor with itself, Unsqueeze and
Squeeze), `--model-output` naming the input or an initializer, the gray rule's class
margin at 0 and 1, resumes with the cache turned off and with the data rewritten as
float64, `LRMPI_BOUND_F64`. The README: every resolution's scores lie within their bound of
the float64 model; `--resume` is bit-identical to an uninterrupted run (results never depend
on the cache) and refuses other data or options with one line."""

import numpy as np
import pytest

from adversary import assert_ok, assert_one_error, attrs_of, mlp_onnx, run, save
from adversary6 import assert_same, infer, results
from test_adv8_crt_keep import stop_at

W0S, W1S = (16, 12), (12, 4)


def build(path, rng, mid, extra_inits=(), pre=None, w0_in=16):
    """x(N,16) [-> pre] -> Gemm -> Relu -> mid nodes (h -> m) -> Gemm -> scores.
    `mid`: list of (op, inputs, attrs) reading "h" and the last writing "m"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    W0 = rng.standard_normal((w0_in, 12)).astype(np.float32)
    b0 = rng.standard_normal(12).astype(np.float32)
    inits = [numpy_helper.from_array(W0, "W0"), numpy_helper.from_array(b0, "b0")]
    nodes = []
    first = "x"
    if pre:
        nodes.append(helper.make_node(pre[0], pre[1], ["xp"], name="pre", **pre[2]))
        first = "xp"
    nodes += [helper.make_node("Gemm", [first, "W0", "b0"], ["g0"], name="g0"),
              helper.make_node("Relu", ["g0"], ["h"], name="r0")]
    width = 12
    for i, (op, ins, attrs) in enumerate(mid):
        out = "m" if i == len(mid) - 1 else f"t{i}"
        nodes.append(helper.make_node(op, ins, [out], name=f"mid{i}", **attrs))
    for name, arr in extra_inits:
        if name == "__width__":     # not an initializer: the width of "m"
            width = arr
        else:
            inits.append(numpy_helper.from_array(arr, name))
    W1 = rng.standard_normal((width, 4)).astype(np.float32)
    b1 = rng.standard_normal(4).astype(np.float32)
    inits += [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(b1, "b1")]
    nodes.append(helper.make_node("Gemm", ["m" if mid else "h", "W1", "b1"], ["s"], name="g1"))
    graph = helper.make_graph(nodes, "odd8", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 16])], [helper.make_tensor_value_info(
            "s", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def f64(model_path):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(model_path)
    return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}


def head(w, X, fmid, pre=None):
    x = X.astype(np.float64)
    if pre:
        x = pre(x, w)
    h = np.maximum(x @ w["W0"] + w["b0"], 0)
    return fmid(h, w) @ w["W1"] + w["b1"]


IDX = np.array([0, 0, 5, 15, 3, 3, 9, 1, 2, 4, 6, 7, 8, 10, 11, 12], np.int64)
SLOPE = np.array([-0.5, 0.25, 2.0, -1.0, 0, 1, 0.5, -2, 0.1, 0.3, -0.3, 1.5],
                 np.float32).reshape(12)

CASES = {
    "gather_input_repeats": dict(
        pre=("Gather", ["x", "gi"], {"axis": 1}), inits=[("gi", IDX)], mid=[],
        f=lambda h, w: h, fpre=lambda x, w: x[:, IDX]),
    "clip_min_only": dict(
        mid=[("Clip", ["h", "lo", ""], {})], inits=[("lo", np.array(0.4, np.float32))],
        f=lambda h, w: np.maximum(h, 0.4)),
    "leaky_slope_0_then_1": dict(
        mid=[("LeakyRelu", ["h"], {"alpha": 0.0}), ("Sub", ["t0", "c"], {}),
             ("LeakyRelu", ["t1"], {"alpha": 1.0})],
        inits=[("c", np.array(0.3, np.float32))], f=lambda h, w: h - 0.3),
    "prelu_negative_slopes": dict(
        mid=[("Sub", ["h", "c"], {}), ("PRelu", ["t0", "sl"], {})],
        inits=[("c", np.array(0.5, np.float32)), ("sl", SLOPE)],
        f=lambda h, w: np.where(h - 0.5 >= 0, h - 0.5, (h - 0.5) * w["sl"])),
    "constant_minus_tensor": dict(
        mid=[("Sub", ["c", "h"], {}), ("Relu", ["t0"], {})],
        inits=[("c", np.array(1.0, np.float32))], f=lambda h, w: np.maximum(1.0 - h, 0)),
    "div_by_constant": dict(
        mid=[("Div", ["h", "q"], {})], inits=[("q", np.array(0.25, np.float32))],
        f=lambda h, w: h / 0.25),
    "bias_first_add": dict(
        mid=[("Add", ["bb", "h"], {}), ("Relu", ["t0"], {})],
        inits=[("bb", np.linspace(-1, 1, 12).astype(np.float32))],
        f=lambda h, w: np.maximum(w["bb"] + h, 0)),
    "pad_features": dict(
        mid=[("Pad", ["h", "pads", "pv"], {"mode": "constant"})],
        inits=[("pads", np.array([0, 2, 0, 3], np.int64)), ("pv", np.array(0.5, np.float32)),
               ("__width__", 17)],
        f=lambda h, w: np.pad(h, ((0, 0), (2, 3)), constant_values=0.5)),
    "concat_with_itself": dict(
        mid=[("Concat", ["h", "h"], {"axis": 1})], inits=[("__width__", 24)],
        f=lambda h, w: np.concatenate([h, h], 1)),
    "unsqueeze_squeeze": dict(
        mid=[("Unsqueeze", ["h", "ax"], {}), ("Squeeze", ["t0", "ax"], {})],
        inits=[("ax", np.array([2], np.int64))], f=lambda h, w: h),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_odd_valid_graph_within_bounds_of_float64_model(tmp_path, rng, case):
    """Each odd graph imports; every resolution's scores lie within their bound of the
    float64 model; the last resolution's decisions equal it."""
    c = CASES[case]
    model = build(tmp_path / "m.onnx", rng, c["mid"], c["inits"], pre=c.get("pre"))
    X = rng.standard_normal((6, 16)).astype(np.float32)
    data = save(tmp_path / "d.npy", X)
    out = tmp_path / "o.h5"
    assert_ok(infer(model, data, out, "--rule", "none", args=("--planes", "3")))
    w = f64(model)
    want = head(w, X, c["f"], c.get("fpre"))
    res = results(out)
    for k, d in res.items():
        assert np.all(np.abs(d["scores"] - want) <= d["bound"][:, None] * (1 + 1e-12)), k
    assert np.array_equal(res[max(res)]["predicted"], want.argmax(1))


@pytest.fixture
def m9(tmp_path, rng):
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 12, 12, 4))
    X = rng.standard_normal((9, 16)).astype(np.float32)
    return model, save(tmp_path / "d.npy", X), X


@pytest.mark.parametrize("name", ["x", "W0"])
def test_model_output_naming_the_input_or_an_initializer(tmp_path, m9, name):
    """`--model-output x` (the graph's input) or `W0` (an initializer): one line naming it,
    exit 1 or 2, no output file."""
    model, data, _ = m9
    out = tmp_path / "o.h5"
    assert_one_error(infer(model, data, out, "--model-output", name), codes=(1, 2),
                     contains=(name,))
    assert not out.exists()


def test_model_output_naming_the_one_output_equals_plain(tmp_path, m9):
    """`--model-output g2`, the model's only output: bit-identical to a run without it."""
    model, data, _ = m9
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(infer(model, data, a))
    assert_ok(infer(model, data, b, "--model-output", "g2"))
    assert_same(b, a)


@pytest.mark.parametrize("margin, refined_later", [("0", 0), ("1", 9)])
def test_gray_class_margin_edges(tmp_path, rng, margin, refined_later):
    """A softmax head, `--rule gray --class-margin 0`: no sample is refined after res 1;
    `--class-margin 1`: every sample is refined at every resolution."""
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 12, 4), softmax=True)
    data = save(tmp_path / "d.npy", rng.standard_normal((9, 16)).astype(np.float32))
    out = tmp_path / "o.h5"
    assert_ok(infer(model, data, out, "--rule", "gray", "--class-margin", margin))
    import h5py
    with h5py.File(out, "r") as f:
        later = [f["resolutions"][k].attrs["refined_count"] for k in sorted(f["resolutions"])][1:]
    assert later and all(r == refined_later for r in later), later


def test_resume_with_the_cache_turned_off_bit_identical(tmp_path, m9):
    """Stopped after res 1 with a cache folder, resumed with `LRMPI_CACHE_DIR=` (none) at 3
    ranks: bit-identical to an uninterrupted run."""
    model, data, _ = m9
    ref = tmp_path / "ref.h5"
    assert_ok(infer(model, data, ref, "--rule", "none"))
    out = tmp_path / "o.h5"
    args = ("infer", model, data, "-o", out, "--planes", "3", "--rule", "none")
    code, err = stop_at(out, 1, *args, env={"LRMPI_CACHE_DIR": str(tmp_path / "c")})
    assert code == 3, err
    assert_ok(run(*args, "--resume", n=3, env={"LRMPI_CACHE_DIR": ""}))
    assert_same(out, ref)


def test_resume_with_data_rewritten_as_float64_same_values(tmp_path, m9):
    """Stopped after res 1; the data file rewritten as float64 of the same float32 values:
    `--resume` is bit-identical to uninterrupted, or refused with one line."""
    model, data, X = m9
    ref = tmp_path / "ref.h5"
    assert_ok(infer(model, data, ref, "--rule", "none"))
    out = tmp_path / "o.h5"
    args = ("infer", model, data, "-o", out, "--planes", "3", "--rule", "none")
    assert stop_at(out, 1, *args, env={"LRMPI_CACHE_DIR": ""})[0] == 3
    np.save(data, X.astype(np.float64))
    r = run(*args, "--resume", env={"LRMPI_CACHE_DIR": ""})
    if r.returncode == 0:
        assert_same(out, ref)
    else:
        assert_one_error(r, code=1)


def test_gray_resume_with_other_class_margin_refused(tmp_path, rng):
    """A gray-rule job stopped after res 1, resumed with another `--class-margin`: one
    line, the file unchanged; resumed with its own: complete."""
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 12, 4), softmax=True)
    data = save(tmp_path / "d.npy", rng.standard_normal((9, 16)).astype(np.float32))
    out = tmp_path / "o.h5"
    base = ("infer", model, data, "-o", out, "--planes", "3", "--rule", "gray")
    assert stop_at(out, 1, *base, "--class-margin", "0.9", env={"LRMPI_CACHE_DIR": ""})[0] == 3
    before = attrs_of(out)["completed"]
    assert_one_error(run(*base, "--class-margin", "0.2", "--resume"), codes=(1, 2))
    assert attrs_of(out)["completed"] == before
    assert_ok(run(*base, "--class-margin", "0.9", "--resume", env={"LRMPI_CACHE_DIR": ""}))


def test_bound_f64_scores_bit_identical_bounds_cover(tmp_path, m9):
    """`LRMPI_BOUND_F64=1`: scores bit-identical to the default run's; every bound still
    covers the float64 model."""
    model, data, X = m9
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(infer(model, data, a, "--rule", "none"))
    assert_ok(run("infer", model, data, "-o", b, "--planes", "3", "--rule", "none",
                  env={"LRMPI_BOUND_F64": "1", "LRMPI_CACHE_DIR": ""}))
    ra, rb = results(a), results(b)
    w = f64(model)
    h = np.maximum(X.astype(np.float64) @ w["W0"] + w["b0"], 0)
    h = np.maximum(h @ w["W1"] + w["b1"], 0)
    want = h @ w["W2"] + w["b2"]
    for k in ra:
        assert np.array_equal(ra[k]["scores"], rb[k]["scores"]), k
        assert np.all(np.abs(rb[k]["scores"] - want) <= rb[k]["bound"][:, None] * (1 + 1e-12))
