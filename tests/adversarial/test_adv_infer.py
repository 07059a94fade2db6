"""Area 5: inference — `lrmpi infer` with models, data and options as users and adversaries
give them."""
import os

import h5py
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adversary import (assert_ok, assert_one_error, attrs_of, mlp_onnx, run, save,
                      snapshot)


def float64_logits(model, X):
    """The float64 model (Gemm/Relu chains of mlp_onnx), evaluated with numpy."""
    m = onnx.load(str(model))
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}
    h = X.reshape(len(X), -1).astype(np.float64)
    for node in m.graph.node:
        if node.op_type == "Gemm":
            h = h @ w[node.input[1]] + w[node.input[2]]
        elif node.op_type == "Relu":
            h = np.maximum(h, 0)
    return h


def resolutions(out):
    with h5py.File(out, "r") as f:
        return {k: {d: f["resolutions"][k][d][()] for d in f["resolutions"][k]}
                for k in f["resolutions"]}


def _covered_or_refused(tmp_path, model, X):
    """3 planes, every sample refined: the last resolution (its bounds cover the float64
    model on every sample), or None if the data were refused with one line."""
    d = save(tmp_path / "d.npy", X)
    out = tmp_path / "s.h5"
    r = run("infer", model, d, "-o", out, "--planes", "3", "--rule", "none")
    if r.returncode != 0:
        assert_one_error(r, code=1)
        return None
    last = resolutions(out)["003"]
    assert (np.abs(last["scores"] - float64_logits(model, X)).max(axis=1) <= last["bound"]).all()
    return last


@pytest.fixture
def model(tmp_path, rng):
    return mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 12, 12, 4))


@pytest.fixture
def data(tmp_path, rng):
    X = rng.standard_normal((9, 16)).astype(np.float32)
    return save(tmp_path / "d.npy", X), X


def test_bounds_cover_float64_model_every_resolution(tmp_path, model, data):
    """|score - float64 logit| <= bound for every sample, logit and resolution (--rule none)."""
    d, X = data
    out = tmp_path / "s.h5"
    assert_ok(run("infer", model, d, "-o", out, "--planes", "3", "--rule", "none"))
    ref = float64_logits(model, X)
    for k, r in resolutions(out).items():
        err = np.abs(r["scores"] - ref).max(axis=1)
        assert (err <= r["bound"]).all(), (k, err, r["bound"])


def test_certified_decisions_equal_float_model_bits_1(tmp_path, model, rng):
    """--bits 1 (coarse planes): every sample marked certified predicts the float64 argmax."""
    X = rng.standard_normal((30, 16)).astype(np.float32)
    d = save(tmp_path / "d.npy", X)
    out = tmp_path / "s.h5"
    assert_ok(run("infer", model, d, "-o", out, "--planes", "6", "--bits", "1"))
    want = float64_logits(model, X).argmax(axis=1)
    for k, r in resolutions(out).items():
        c = r["certified"]
        assert (r["predicted"][c] == want[c]).all(), k


def test_rank_counts_bit_identical_with_more_ranks_than_samples(tmp_path, model, rng):
    X = rng.standard_normal((2, 16)).astype(np.float32)
    d = save(tmp_path / "d.npy", X)
    res = []
    for n in (1, 3):
        out = tmp_path / f"s{n}.h5"
        assert_ok(run("infer", model, d, "-o", out, "--planes", "2", "--rule", "none", n=n))
        res.append(resolutions(out))
    for k in res[0]:
        assert np.array_equal(res[0][k]["scores"], res[1][k]["scores"])


def test_uint8_image_data(tmp_path, model, rng):
    """uint8 data (as images come) is used as its values: bounds still cover the model."""
    X = rng.integers(0, 256, (5, 16)).astype(np.uint8)
    _covered_or_refused(tmp_path, model, X)


@pytest.mark.parametrize("bad", ["nan", "inf", "empty", "cols17", "complex", "str"])
def test_bad_data(tmp_path, model, bad):
    X = np.ones((4, 16), np.float32)
    if bad == "nan":
        X[2, 3] = np.nan
    elif bad == "inf":
        X[0, 0] = -np.inf
    elif bad == "empty":
        X = np.ones((0, 16), np.float32)
    elif bad == "cols17":
        X = np.ones((4, 17), np.float32)
    elif bad == "complex":
        X = X.astype(np.complex64)
    elif bad == "str":
        X = np.array([["a"] * 16] * 4)
    d = save(tmp_path / "d.npy", X)
    out = tmp_path / "s.h5"
    r = run("infer", model, d, "-o", out, n=2)
    assert_one_error(r, code=1)
    assert not out.exists()


@pytest.mark.parametrize("opts", [["--gray", "0.3"], ["--gray", "a,b"], ["--gray", "0.3,0.6,0.9"],
                                  ["--rule", "gray", "--class-margin", "1.5"],
                                  ["--rule", "gray", "--class-margin", "-0.1"],
                                  ["--rule", "gray", "--class-margin", "nan"],
                                  ["--rule", "gray", "--gray", "-0.1,0.5"],
                                  ["--rule", "none", "--no-adaptive", "--gray", "0.2,0.4"],
                                  ["--write", "ranks"], ["--final", "crt"], ["--planes", "17"],
                                  ["--bits", "8"]])
def test_bad_infer_options(tmp_path, model, data, opts):
    d, _ = data
    out = tmp_path / "s.h5"
    r = run("infer", model, d, "-o", out, *opts)
    assert_one_error(r, code=2)
    assert not out.exists()


def test_model_with_tanh_and_unsupported_op_named(tmp_path, rng):
    """A Tanh hidden activation and an Erf node: refused naming the operator."""
    for op in ("Tanh", "Erf", "Sin"):
        W = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "W")
        bb = numpy_helper.from_array(np.zeros(4, np.float32), "b")
        nodes = [helper.make_node(op, ["x"], ["h"]), helper.make_node("Gemm", ["h", "W", "b"], ["y"])]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [W, bb])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        path = tmp_path / f"{op}.onnx"
        onnx.save(m, str(path))
        d = save(tmp_path / "d.npy", np.ones((3, 16), np.float32))
        r = run("infer", path, d, "-o", tmp_path / f"{op}.h5")
        assert_one_error(r, code=1, contains=(op,))


def test_model_file_damaged(tmp_path, model, data):
    """An ONNX file truncated, a text file renamed .onnx, and a missing model: one line each."""
    d, _ = data
    with open(model, "rb") as f:
        raw = f.read()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(raw[: len(raw) // 2])
    txt = tmp_path / "txt.onnx"
    txt.write_text("not a model\n")
    for m in (cut, txt, tmp_path / "missing.onnx", tmp_path):
        r = run("infer", m, d, "-o", tmp_path / "s.h5")
        assert_one_error(r, code=1)


def test_npz_model_with_pickle_refused(tmp_path, data):
    """An .npz 'model' holding an object array (a pickle) is refused, never unpickled."""
    d, _ = data
    marker = tmp_path / "pwned"
    z = tmp_path / "m.npz"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    np.savez(z, graph=np.array([Evil()], dtype=object))
    r = run("infer", z, d, "-o", tmp_path / "s.h5")
    assert_one_error(r, code=1)
    assert not marker.exists()


def test_resume_with_other_data_refused(tmp_path, model, data, rng):
    d, X = data
    out = str(tmp_path / "s.h5")
    assert_ok(run("infer", model, d, "-o", out, "--planes", "2"))
    before = snapshot(out + ".d")
    d2 = save(tmp_path / "d2.npy", X + 1)
    r = run("infer", model, d2, "-o", out, "--planes", "2", "--resume")
    assert_one_error(r, codes=(1, 2))
    assert snapshot(out + ".d") == before
    assert attrs_of(out)["status"] == "complete"


def test_resume_with_other_rule_refused(tmp_path, model, data):
    """A checkpoint made with --rule certified resumed with --rule none: refused (options
    differ) or continued to the same result; never a silently mixed file."""
    d, _ = data
    out = str(tmp_path / "s.h5")
    assert_ok(run("infer", model, d, "-o", out, "--planes", "2"))
    r = run("infer", model, d, "-o", out, "--planes", "2", "--rule", "none", "--resume")
    if r.returncode == 0:
        assert attrs_of(out)["rule"] == "certified"
        assert "nothing to do" in r.stderr or "complete" in r.stderr
    else:
        assert_one_error(r, codes=(1, 2))


def test_fixed_batch_model_with_many_samples(tmp_path, rng):
    """A model exported with a fixed batch of 1 ([1, 16]) and 5 samples: each sample scored
    (the batch axis is the samples) or one line — never a reshape across samples."""
    model = mlp_onnx(tmp_path / "m1.onnx", rng, sizes=(16, 8, 3), batch=1)
    X = rng.standard_normal((5, 16)).astype(np.float32)
    last = _covered_or_refused(tmp_path, model, X)
    assert last is None or last["scores"].shape == (5, 3)


def test_data_from_h5_with_sample_axis_and_model_from_other_folder(tmp_path, model, rng):
    """DATA as FILE.h5:/group/X and the model given by a relative path from another folder."""
    X = rng.standard_normal((4, 16))
    f5 = tmp_path / "data.h5"
    with h5py.File(f5, "w") as f:
        f.create_dataset("grp/X", data=X, compression="gzip")
    sub = tmp_path / "run"
    sub.mkdir()
    r = run("infer", os.path.relpath(model, sub), f"../data.h5:/grp/X", "-o", "s.h5",
            "--planes", "2", cwd=sub)
    assert_ok(r)
    assert attrs_of(sub / "s.h5")["n_samples"] == 4


def test_softmax_head_predictions(tmp_path, rng):
    """A Softmax head: the last resolution's predictions equal the float64 argmax."""
    model = mlp_onnx(tmp_path / "ms.onnx", rng, sizes=(16, 10, 5), softmax=True)
    X = rng.standard_normal((20, 16)).astype(np.float32)
    d = save(tmp_path / "d.npy", X)
    out = tmp_path / "s.h5"
    assert_ok(run("infer", model, d, "-o", out, "--planes", "4", "--rule", "none", n=2))
    last = resolutions(out)[f"{attrs_of(out)['completed']:03d}"]
    assert np.array_equal(last["predicted"], float64_logits(model, X).argmax(axis=1))


def test_infer_stopped_then_resumed_at_other_rank_count(tmp_path, model, rng):
    """SIGTERM after resolution 1 at -n 2, --resume at -n 3: bit-identical to -n 1."""
    from adversary import stop_after
    X = rng.standard_normal((12, 16)).astype(np.float32)
    d = save(tmp_path / "d.npy", X)
    ref = tmp_path / "ref.h5"
    assert_ok(run("infer", model, d, "-o", ref, "--planes", "3", "--rule", "none"))
    out = str(tmp_path / "s.h5")
    rc, err = stop_after(out, 1, "infer", model, d, "-o", out, "--planes", "3", "--rule", "none",
                         slow="1.0", env={"LRMPI_ROOT_COMPUTES": "auto"})
    assert rc in (3, 0), err
    assert_ok(run("infer", model, d, "-o", out, "--planes", "3", "--rule", "none", "--resume", n=3))
    a, b = resolutions(ref), resolutions(out)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k]["scores"], b[k]["scores"]), k


def test_infer_slurm_end_time_past_exit_4(tmp_path, model, data):
    """infer inside a SLURM job whose end time has passed: exit 4 at -n 3 (with
    --deadline-ok too), the job file says deadline and lists nothing."""
    import time
    d, _ = data
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "squeue").write_text("#!/bin/bash\nexit 1\n")
    (fake / "squeue").chmod(0o755)
    env = {"SLURM_JOB_ID": "31", "SLURM_JOB_END_TIME": str(int(time.time()) - 5),
           "PATH": f"{fake}:{os.environ['PATH']}"}
    for extra in ((), ("--deadline-ok",)):
        out = tmp_path / f"s{len(extra)}.h5"
        r = run("infer", model, d, "-o", out, *extra, n=3, env=env)
        assert r.returncode == 4, r.stderr
        assert "Traceback" not in r.stderr
