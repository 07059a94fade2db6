"""Second adversarial pass, area 5: `lrmpi infer` — data dtypes and layouts, output choice,
hostile ONNX graphs, Gemm attributes, --keep, a killed worker, gray-rule edges."""
import os
import time

import h5py
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adversary import (assert_ok, assert_one_error, kill_rank_after_first, mlp_onnx, run, save,
                      start)


def float64_logits(model, X):
    """The float64 model (Flatten, Gemm with alpha/beta/transB, Relu), evaluated with numpy."""
    m = onnx.load(str(model))
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}
    h = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    for node in m.graph.node:
        at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm":
            W = w[node.input[1]]
            if at.get("transB", 0):
                W = W.T
            h = at.get("alpha", 1.0) * (h @ W) + at.get("beta", 1.0) * w[node.input[2]]
        elif node.op_type == "Relu":
            h = np.maximum(h, 0)
    return h


def last_resolution(out):
    with h5py.File(out, "r") as f:
        k = sorted(f["resolutions"].keys())[-1]
        return {d: f["resolutions"][k][d][()] for d in f["resolutions"][k]}


def covers(out, model, X):
    last = last_resolution(out)
    dev = np.abs(last["scores"] - float64_logits(model, X)).max(axis=1)
    assert (dev <= last["bound"]).all(), (dev, last["bound"])
    return last


@pytest.fixture
def model(tmp_path, rng):
    return mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 10, 4))


def _gemm_model(path, rng, attrs, W_shape, flatten_input=None):
    nodes, inits = [], []
    x = "x"
    if flatten_input:
        nodes.append(helper.make_node("Flatten", ["x"], ["xf"], axis=1, name="flat"))
        x = "xf"
    W = rng.standard_normal(W_shape).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    inits += [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")]
    nodes.append(helper.make_node("Gemm", [x, "W", "b"], ["y"], name="g", **attrs))
    shape = ["N", *flatten_input] if flatten_input else ["N", 16]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return str(path)


@pytest.mark.parametrize("dtype", ["float16", "int32", "float64"])
def test_data_dtypes_covered(tmp_path, model, rng, dtype):
    """float16, int32 and float64 data: used as their values, bounds cover the float64 model
    (or refused with one line)."""
    X = (rng.standard_normal((5, 16)) * 3).astype(dtype)
    d = save(tmp_path / "d.npy", X)
    out = tmp_path / "s.h5"
    r = run("infer", model, d, "-o", out, "--planes", "3", "--rule", "none")
    if r.returncode != 0:
        assert_one_error(r, code=1)
        return
    covers(out, model, X)


def test_fortran_order_and_h5_data_bit_identical(tmp_path, model, rng):
    """The same samples as a C-order .npy, a Fortran-order .npy and a chunked gzip HDF5
    dataset: bit-identical scores and bounds."""
    X = rng.standard_normal((7, 16)).astype(np.float32)
    c = save(tmp_path / "c.npy", X)
    fo = save(tmp_path / "f.npy", np.asfortranarray(X))
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("X", data=X, chunks=(3, 8), compression="gzip")
    got = []
    for i, data in enumerate((c, fo, f"{tmp_path / 'd.h5'}:/X")):
        out = tmp_path / f"s{i}.h5"
        assert_ok(run("infer", model, data, "-o", out, "--planes", "2", "--rule", "none"))
        got.append(last_resolution(out))
    for g in got[1:]:
        assert np.array_equal(g["scores"], got[0]["scores"])
        assert np.array_equal(g["bound"], got[0]["bound"])


def test_one_dimensional_data_refused(tmp_path, model, rng):
    """A single sample saved without its batch axis, shape (16,): refused (not reshaped)."""
    d = save(tmp_path / "d.npy", rng.standard_normal(16).astype(np.float32))
    assert_one_error(run("infer", model, d, "-o", tmp_path / "s.h5"), code=1)
    assert not (tmp_path / "s.h5").exists()


def test_model_output_chooses_hidden_and_unknown_name_refused(tmp_path, rng):
    """Two float outputs: --model-output r0 scores the hidden ReLU (10 values per sample);
    --model-output nosuch is refused with one line naming it."""
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 10, 4), outputs=["r0"])
    X = rng.standard_normal((4, 16)).astype(np.float32)
    d = save(tmp_path / "d.npy", X)
    out = tmp_path / "s.h5"
    assert_ok(run("infer", model, d, "-o", out, "--planes", "2", "--model-output", "r0",
                  "--rule", "none"))
    assert last_resolution(out)["scores"].shape == (4, 10)
    r = run("infer", model, d, "-o", tmp_path / "t.h5", "--model-output", "nosuch")
    assert_one_error(r, codes=(1, 2), contains=("nosuch",))


def test_node_reading_an_undefined_tensor(tmp_path, rng):
    """A Relu whose input names a tensor nothing produces: one line, exit 1."""
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 8, 4))
    m = onnx.load(model)
    for node in m.graph.node:
        if node.op_type == "Relu":
            node.input[0] = "ghost"
    onnx.save(m, model)
    d = save(tmp_path / "d.npy", rng.standard_normal((3, 16)).astype(np.float32))
    assert_one_error(run("infer", model, d, "-o", tmp_path / "s.h5"), code=1)


def test_initializer_with_huge_declared_dims_and_no_data(tmp_path, rng):
    """A weight initializer that declares 10^6 x 10^6 floats but holds none: one line,
    promptly, no MemoryError."""
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 8, 4))
    m = onnx.load(model)
    w = m.graph.initializer[0]
    del w.dims[:]
    w.dims.extend([10**6, 10**6])
    w.raw_data = b"\0" * 64
    del w.float_data[:]
    onnx.save(m, model)
    d = save(tmp_path / "d.npy", rng.standard_normal((3, 16)).astype(np.float32))
    t = time.monotonic()
    assert_one_error(run("infer", model, d, "-o", tmp_path / "s.h5", timeout=60), code=1)
    assert time.monotonic() - t < 30


def test_model_through_symlink_and_flat_or_shaped_data(tmp_path, rng):
    """A model with input (N, 4, 4) and a Flatten, given through a symlink: data (N, 4, 4)
    and (N, 16) give bit-identical scores; (N, 2, 8) is refused with one line."""
    real = _gemm_model(tmp_path / "real.onnx", rng, {}, (16, 4), flatten_input=[4, 4])
    link = tmp_path / "link.onnx"
    os.symlink(real, link)
    X = rng.standard_normal((5, 4, 4)).astype(np.float32)
    outs = []
    for i, arr in enumerate((X, X.reshape(5, 16))):
        out = tmp_path / f"s{i}.h5"
        assert_ok(run("infer", link, save(tmp_path / f"d{i}.npy", arr), "-o", out,
                      "--planes", "2", "--rule", "none"))
        outs.append(last_resolution(out)["scores"])
    assert np.array_equal(outs[0], outs[1])
    bad = save(tmp_path / "bad.npy", X.reshape(5, 2, 8))
    assert_one_error(run("infer", link, bad, "-o", tmp_path / "s9.h5"), code=1)


def test_gemm_transb_alpha_beta(tmp_path, rng):
    """Gemm(transB=1, alpha=0.5, beta=2): the bounds cover the float64 model with those
    attributes."""
    model = _gemm_model(tmp_path / "g.onnx", rng, {"transB": 1, "alpha": 0.5, "beta": 2.0},
                        (4, 16))
    X = rng.standard_normal((6, 16)).astype(np.float32)
    out = tmp_path / "s.h5"
    assert_ok(run("infer", model, save(tmp_path / "d.npy", X), "-o", out, "--planes", "3",
                  "--rule", "none"))
    covers(out, model, X)


def test_keep_latest_infer(tmp_path, model, rng):
    """infer --keep latest: complete, one resolution listed, no resume data left."""
    X = rng.standard_normal((6, 16)).astype(np.float32)
    out = str(tmp_path / "s.h5")
    assert_ok(run("infer", model, save(tmp_path / "d.npy", X), "-o", out, "--planes", "3",
                  "--keep", "latest", "--rule", "none"))
    with h5py.File(out, "r") as f:
        assert list(f["resolutions"].keys()) == ["003"]
    covers(out, model, X)
    jobdir = [os.path.join(out + ".d", s) for s in os.listdir(out + ".d")
              if os.path.isdir(os.path.join(out + ".d", s))]
    for jd in jobdir:
        assert not [n for n in os.listdir(jd) if not n.startswith("res003")], os.listdir(jd)


def test_infer_worker_sigkill_then_resume_bit_identical(tmp_path, rng):
    """SIGKILL of worker rank 2 of `infer` at -n 3 once resolution 1 is listed: the job ends
    by itself, non-zero; --resume at -n 2 completes equal to an uninterrupted -n 1 run."""
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 12, 4))
    d = save(tmp_path / "d.npy", rng.standard_normal((24, 16)).astype(np.float32))
    out = str(tmp_path / "s.h5")
    mark = f"adv2i-{os.getpid()}"
    p = start("infer", model, d, "-o", out, "--planes", "3", "--rule", "none", n=3,
              env={"ADV_MARK": mark, "LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "0.4"})
    kill_rank_after_first(p, out, mark, 2)
    assert_ok(run("infer", model, d, "-o", out, "--planes", "3", "--rule", "none", "--resume",
                  n=2))
    ref = str(tmp_path / "ref.h5")
    assert_ok(run("infer", model, d, "-o", ref, "--planes", "3", "--rule", "none"))
    a, b = last_resolution(out), last_resolution(ref)
    assert np.array_equal(a["scores"], b["scores"]) and np.array_equal(a["bound"], b["bound"])


def test_gray_rule_sigmoid_one_logit(tmp_path, rng):
    """One logit (K = 1) with --rule gray --gray 0.45,0.55: completes; refined counts never
    grow from one resolution to the next."""
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 8, 1))
    d = save(tmp_path / "d.npy", rng.standard_normal((20, 16)).astype(np.float32))
    out = str(tmp_path / "s.h5")
    assert_ok(run("infer", model, d, "-o", out, "--planes", "3", "--rule", "gray",
                  "--gray", "0.45,0.55"))
    with h5py.File(out, "r") as f:
        refined = [int(f["resolutions"][k].attrs["refined_count"])
                   for k in sorted(f["resolutions"].keys())]
    assert all(x >= y for x, y in zip(refined, refined[1:])), refined


@pytest.mark.parametrize("opts", [["--rule", "gray", "--gray", "0.6,0.3"],
                                  ["--rule", "gray", "--gray", "nan,0.5"],
                                  ["--rule", "gray", "--gray", "0.2,1.5"],
                                  ["--model-output", ""]])
def test_gray_window_edges_refused(tmp_path, model, rng, opts):
    """--gray with LO > HI, a NaN end, HI > 1 (exit 2), and an empty --model-output (exit 1
    or 2, the model has no such output): one line, nothing written."""
    d = save(tmp_path / "d.npy", rng.standard_normal((3, 16)).astype(np.float32))
    r = run("infer", model, d, "-o", tmp_path / "s.h5", *opts)
    assert_one_error(r, code=2 if opts[0] == "--rule" else None, codes=None if opts[0] == "--rule" else (1, 2))
    assert not (tmp_path / "s.h5").exists()
