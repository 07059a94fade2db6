"""Fourth adversarial pass, area 5: inference — one sample, a prime number of samples,
K = 1 and (K, 1, 1) score outputs, an unreadable model, output piped into `head`."""
import os
import subprocess

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from adversary import (assert_ok, assert_one_error, cmd, mlp_onnx, run, run_nocap, save)
from test_adv_infer import float64_logits, resolutions


def _covered(out, ref):
    for k, r in resolutions(out).items():
        err = np.abs(r["scores"].reshape(len(ref), -1) - ref).max(axis=1)
        assert (err <= r["bound"]).all(), (k, err, r["bound"])
    return resolutions(out)


def _run_covered(tmp_path, rng, sizes, X, n):
    """An MLP of `sizes` on X at n ranks, 3 planes: (float64 logits, resolutions), every
    resolution's bound checked to cover the float64 model."""
    m = mlp_onnx(tmp_path / "m.onnx", rng, sizes=sizes)
    out = tmp_path / "s.h5"
    assert_ok(run("infer", m, save(tmp_path / "d.npy", X), "-o", out, "--planes", "3", n=n))
    ref = float64_logits(m, X)
    return ref, _covered(out, ref)


def test_one_sample_at_three_ranks(tmp_path, rng):
    """One sample under mpiexec -n 3 (two ranks idle): every resolution's bound covers the
    float64 model, certified decisions equal its argmax."""
    ref, res = _run_covered(tmp_path, rng, (8, 6, 5),
                            rng.standard_normal((1, 8)).astype(np.float32), 3)
    for r in res.values():
        c = r["certified"]
        assert (r["predicted"][c] == ref.argmax(axis=1)[c]).all()


def test_prime_sample_count_bit_identical_across_ranks(tmp_path, rng):
    """13 samples (a multiple of nothing) at 1, 2 and 3 ranks, every sample refined: the
    scores and bounds are bit-identical."""
    m = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(8, 6, 5))
    d = save(tmp_path / "d.npy", rng.standard_normal((13, 8)).astype(np.float32))
    res = []
    for n in (1, 2, 3):
        out = tmp_path / f"s{n}.h5"
        assert_ok(run("infer", m, d, "-o", out, "--planes", "2", "--rule", "none", n=n))
        res.append(resolutions(out))
    for k in res[0]:
        for other in res[1:]:
            assert np.array_equal(res[0][k]["scores"], other[k]["scores"])
            assert np.array_equal(res[0][k]["bound"], other[k]["bound"])


def test_single_logit_output_certified_sign(tmp_path, rng):
    """A model with K = 1 output (one logit, no sigmoid): bounds cover the float64 logit
    and a certified sample's decision is the logit's sign."""
    ref, res = _run_covered(tmp_path, rng, (8, 6, 1),
                            rng.standard_normal((11, 8)).astype(np.float32), 2)
    for r in res.values():
        c = r["certified"]
        assert (r["predicted"][c] == (ref[c, 0] > 0)).all()


def _conv_pool_model(path, rng):
    """x (N,2,5,5) -> 3x3 conv (pad 1) -> ReLU -> 1x1 conv to K=4 -> global average pool:
    scores of shape (N, 4, 1, 1); returns the weights for a numpy reference."""
    W1 = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(3).astype(np.float32)
    W2 = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    b2 = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "W2", "b2"], ["c2"], name="c2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="gap")]
    g = helper.make_graph(
        nodes, "k11", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1, 1])],
        [numpy_helper.from_array(v, k) for k, v in
         {"W1": W1, "b1": b1, "W2": W2, "b2": b2}.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return [w.astype(np.float64) for w in (W1, b1, W2, b2)]


def _conv_pool_float64(X, W1, b1, W2, b2):
    X = np.pad(X.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n = len(X)
    h = np.zeros((n, 3, 5, 5))
    for i in range(5):
        for j in range(5):
            h[:, :, i, j] = np.einsum("ncuv,ocuv->no", X[:, :, i:i + 3, j:j + 3], W1) + b1
    h = np.maximum(h, 0)
    y = np.einsum("nchw,oc->nohw", h, W2[:, :, 0, 0]) + b2[None, :, None, None]
    return y.mean(axis=(2, 3))


def test_k_1_1_score_output_of_a_conv_classifier(tmp_path, rng):
    """A classifier ending in a 1x1 conv and a global pool, scores (N, K, 1, 1), 7 samples
    at 3 ranks: scores are per-sample vectors of K whose bounds cover the float64 model."""
    m = tmp_path / "k11.onnx"
    w = _conv_pool_model(m, rng)
    X = rng.standard_normal((7, 2, 5, 5)).astype(np.float32)
    out = tmp_path / "s.h5"
    assert_ok(run("infer", m, save(tmp_path / "d.npy", X), "-o", out, "--planes", "3",
                  "--rule", "none", n=3))
    ref = _conv_pool_float64(X, *w)
    res = _covered(out, ref)
    last = res[max(res)]
    assert last["scores"].reshape(7, -1).shape == (7, 4)
    assert (last["predicted"][last["certified"]] == ref.argmax(axis=1)[last["certified"]]).all()


def test_unreadable_model_one_line(tmp_path, rng):
    """A model file the user may not read (mode 000): one line naming it, exit 1, no
    output."""
    m = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(8, 4))
    d = save(tmp_path / "d.npy", rng.standard_normal((3, 8)).astype(np.float32))
    os.chmod(m, 0)
    try:
        r = run_nocap("infer", m, d, "-o", tmp_path / "s.h5")
    finally:
        os.chmod(m, 0o644)
    assert_one_error(r, code=1, contains=("m.onnx",))
    assert not (tmp_path / "s.h5").exists()


def test_model_in_unsearchable_folder_one_line(tmp_path, rng):
    """A model inside a folder the user may not search (mode 600): one line, exit 1."""
    (tmp_path / "sub").mkdir()
    m = mlp_onnx(tmp_path / "sub" / "m.onnx", rng, sizes=(8, 4))
    d = save(tmp_path / "d.npy", rng.standard_normal((3, 8)).astype(np.float32))
    os.chmod(tmp_path / "sub", 0o600)
    try:
        r = run_nocap("infer", m, d, "-o", tmp_path / "s.h5")
    finally:
        os.chmod(tmp_path / "sub", 0o755)
    assert_one_error(r, code=1, contains=("m.onnx",))


def test_output_piped_into_head_completes(tmp_path, rng):
    """`lrmpi infer ... 2>&1 | head -c1`: the job runs to the end (exit 0), the result is
    complete."""
    m = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(8, 6, 5))
    d = save(tmp_path / "d.npy", rng.standard_normal((9, 8)).astype(np.float32))
    out = tmp_path / "s.h5"
    line = " ".join(f"'{x}'" for x in cmd("infer", m, d, "-o", out, "--planes", "3"))
    r = subprocess.run(["bash", "-c", f"{line} 2>&1 | head -c1; exit ${{PIPESTATUS[0]}}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import h5py
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "complete" and len(f["resolutions"]) == 3
