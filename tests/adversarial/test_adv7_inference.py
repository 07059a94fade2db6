"""Seventh adversarial pass, area 5: inference in depth — every `--rule` stopped and resumed
at another rank count, data changed between run and `--resume` (samples permuted, one
appended, one value changed in an .h5), a SIGKILL while the model is prepared, models with
odd but valid graphs (Identity/Dropout chains, Split+Concat, Transpose pairs, residual Add/Sub,
Sum of three, Gather/Slice), `--model-output` of two float outputs, frozen / certified
samples resumed. The README: results never depend on the rank count, `--resume` is
bit-identical to an uninterrupted run and refuses other data; bounds cover the float64
model; a certified decision never differs from the float64 model's."""
import os
import signal
import time

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, attrs_of, kill_group, mlp_onnx, run, save,
                       start, stop_after, wait_for)
from adversary6 import assert_same, infer, results

ARGS = ("--planes", "3")


@pytest.fixture
def m3(tmp_path, rng):
    """A 16-12-12-4 ReLU MLP and 9 samples."""
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 12, 12, 4))
    X = rng.standard_normal((9, 16)).astype(np.float32)
    return model, save(tmp_path / "d.npy", X), X


def ref_run(tmp_path, model, data, *extra, name="ref.h5"):
    ref = tmp_path / name
    assert_ok(infer(model, data, ref, *extra, args=ARGS))
    return ref


@pytest.mark.parametrize("rule, first, second", [
    (("--rule", "certified"), 2, 3),
    (("--rule", "gray", "--class-margin", "0.3"), 3, 1),
    (("--rule", "none"), 2, 1),
    (("--no-adaptive",), 3, 2),
])
def test_every_rule_stopped_then_resumed_at_other_count_bit_identical(tmp_path, m3, rule,
                                                                      first, second):
    """Each rule: SIGTERM after resolution 1 at `first` ranks, `--resume` at `second`:
    every resolution bit-identical to an uninterrupted one-rank run, status complete."""
    model, data, _ = m3
    ref = ref_run(tmp_path, model, data, *rule)
    out = str(tmp_path / "S.h5")
    cache = str(out) + ".testcache"
    rc, err = stop_after(out, 1, "infer", model, data, "-o", out, *ARGS, *rule, n=first,
                         slow="0.3", env={"LRMPI_CACHE_DIR": cache})
    assert rc in (0, 3), err
    assert_ok(infer(model, data, out, *rule, "--resume", args=ARGS, n=second))
    assert attrs_of(out)["status"] == "complete"
    assert_same(out, ref)


def test_data_changed_between_stop_and_resume_refused_one_line(tmp_path, m3):
    """Samples permuted, one appended, the last dropped between a stop and `--resume`
    (each in turn): one line, exit 1 or 2, and the stopped checkpoint unchanged; with the
    original data back it resumes."""
    model, data, X = m3
    out = str(tmp_path / "S.h5")
    rc, err = stop_after(out, 1, "infer", model, data, "-o", out, *ARGS, n=2, slow="0.3",
                         env={"LRMPI_CACHE_DIR": out + ".testcache"})
    assert rc == 3, err
    before = attrs_of(out)
    for Y in (X[::-1], np.vstack([X, X[:1]]), X[:-1]):
        np.save(data, Y)
        r = infer(model, data, out, "--resume", args=ARGS)
        assert_one_error(r, codes=(1, 2))
        after = attrs_of(out)
        assert after["completed"] == before["completed"] and after["job_id"] == before["job_id"]
    np.save(data, X)
    assert_ok(infer(model, data, out, "--resume", args=ARGS))


def test_h5_data_one_value_changed_between_stop_and_resume_refused(tmp_path, m3):
    """Data from `FILE.h5:/x`; one sample's value changed in place (same file, same shape)
    between a stop and `--resume`: refused with one line."""
    model, _, X = m3
    h5 = str(tmp_path / "d.h5")
    with h5py.File(h5, "w") as f:
        f["x"] = X
    out = str(tmp_path / "S.h5")
    rc, err = stop_after(out, 1, "infer", model, h5 + ":/x", "-o", out, *ARGS, n=2,
                         slow="0.3", env={"LRMPI_CACHE_DIR": out + ".testcache"})
    assert rc == 3, err
    with h5py.File(h5, "r+") as f:
        f["x"][4, 7] = np.nextafter(np.float32(f["x"][4, 7]), np.float32(np.inf))
    assert_one_error(infer(model, h5 + ":/x", out, "--resume", args=ARGS), codes=(1, 2))


def test_sigkill_while_preparing_then_resume_equals_uninterrupted(tmp_path, m3):
    """SIGKILL of `mpiexec -n 2` while the model is prepared (phase `preparing`, slow
    preparation): `inspect --status` says killed (or running); `--resume` at one rank
    completes bit-identical to an uninterrupted run."""
    model, data, _ = m3
    ref = ref_run(tmp_path, model, data)
    out = str(tmp_path / "S.h5")
    p = start("infer", model, data, "-o", out, *ARGS, n=2,
              env={"LRMPI_TEST_SLOW_PREPARE_S": "30", "LRMPI_CACHE_DIR": out + ".c"})
    try:
        limit = time.time() + 60
        while time.time() < limit:
            try:
                if attrs_of(out).get("phase") == "preparing":
                    break
            except (OSError, KeyError):
                pass
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        kill_group(p)
    st = run("inspect", "--status", out)
    assert st.stdout.strip() in ("killed", "running"), st.stdout + st.stderr
    assert_ok(infer(model, data, out, "--resume", args=ARGS))
    assert_same(out, ref)


def odd_graph(path, rng):
    """16 -> Identity -> Dropout -> Gemm(16x12) -> Relu -> Split(6,6) -> Concat(reversed)
    -> Transpose pair via Reshape (N,12)->(N,3,4)->perm(0,2,1)->perm(0,2,1)->(N,12)
    -> Add(x, Mul(x, -0.5)) -> Sum(a, a, a) -> Gemm(12x5) -> Slice [0:4] -> Gather [3,0,1,2]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    W0 = rng.standard_normal((16, 12)).astype(np.float32)
    b0 = rng.standard_normal(12).astype(np.float32)
    W1 = rng.standard_normal((12, 5)).astype(np.float32)
    b1 = rng.standard_normal(5).astype(np.float32)
    inits = [numpy_helper.from_array(W0, "W0"), numpy_helper.from_array(b0, "b0"),
             numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(b1, "b1"),
             numpy_helper.from_array(np.array([6, 6], np.int64), "split"),
             numpy_helper.from_array(np.array([-1, 3, 4], np.int64), "s3"),
             numpy_helper.from_array(np.array([-1, 12], np.int64), "s2"),
             numpy_helper.from_array(np.array(-0.5, np.float32), "half"),
             numpy_helper.from_array(np.array([0], np.int64), "st"),
             numpy_helper.from_array(np.array([4], np.int64), "en"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"),
             numpy_helper.from_array(np.array([3, 0, 1, 2], np.int64), "idx")]
    N = helper.make_node
    nodes = [N("Identity", ["x"], ["i0"], name="id"),
             N("Dropout", ["i0"], ["i1"], name="drop"),
             N("Gemm", ["i1", "W0", "b0"], ["g0"], name="g0"),
             N("Relu", ["g0"], ["r0"], name="r0"),
             N("Split", ["r0", "split"], ["p0", "p1"], axis=1, name="split"),
             N("Concat", ["p1", "p0"], ["c0"], axis=1, name="cat"),
             N("Reshape", ["c0", "s3"], ["h0"], name="rs1"),
             N("Transpose", ["h0"], ["t0"], perm=[0, 2, 1], name="tr1"),
             N("Transpose", ["t0"], ["t1"], perm=[0, 2, 1], name="tr2"),
             N("Reshape", ["t1", "s2"], ["h1"], name="rs2"),
             N("Mul", ["h1", "half"], ["m0"], name="mul"),
             N("Add", ["h1", "m0"], ["d0"], name="add"),
             N("Sum", ["d0", "d0", "d0"], ["s0"], name="sum"),
             N("Gemm", ["s0", "W1", "b1"], ["g1"], name="g1"),
             N("Slice", ["g1", "st", "en", "ax"], ["sl"], name="slice"),
             N("Gather", ["sl", "idx"], ["y"], axis=1, name="gather")]
    graph = helper.make_graph(nodes, "odd",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def float64_scores(X, model_path):
    """The float64 evaluation of odd_graph's model (numpy, from its initializers)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(model_path)
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}
    h = np.maximum(X.astype(np.float64) @ w["W0"] + w["b0"], 0)
    h = np.concatenate([h[:, 6:], h[:, :6]], axis=1)
    h = 3 * (h - h * 0.5)
    g = h @ w["W1"] + w["b1"]
    return g[:, :4][:, [3, 0, 1, 2]]


def test_odd_but_valid_graph_bounds_cover_float64_model(tmp_path, rng):
    """A graph of Identity, Dropout, Split+Concat (reversed), a Transpose pair through
    Reshapes, x + (-0.5)x, Sum of three, Slice and Gather: imports, and every resolution's
    scores lie within their bound of the float64 model; the last one's decisions equal it."""
    model = odd_graph(tmp_path / "odd.onnx", rng)
    X = rng.standard_normal((7, 16)).astype(np.float32)
    data = save(tmp_path / "d.npy", X)
    out = tmp_path / "o.h5"
    assert_ok(infer(model, data, out, "--rule", "none", args=("--planes", "4"), n=2))
    want = float64_scores(X, model)
    res = results(out)
    for k, d in res.items():
        assert np.all(np.abs(d["scores"] - want) <= d["bound"][:, None] * (1 + 1e-12)), k
    last = res[max(res)]
    assert np.array_equal(last["predicted"], want.argmax(1))


def two_output_model(path, rng):
    """An MLP whose graph lists the hidden ReLU first, then the scores."""
    import onnx
    p = mlp_onnx(path, rng, sizes=(16, 12, 4))
    m = onnx.load(p)
    outs = list(m.graph.output)
    from onnx import TensorProto, helper
    hidden = helper.make_tensor_value_info("r0", TensorProto.FLOAT, ["N", 12])
    del m.graph.output[:]
    m.graph.output.extend([hidden] + outs)
    onnx.save(m, p)
    return p, outs[0].name


def test_model_output_picks_scores_of_a_two_output_model_equal_to_plain(tmp_path, rng):
    """Two float outputs (hidden ReLU listed first): refused without `--model-output`;
    with `--model-output g1` bit-identical to the same MLP with one output, at 2 ranks."""
    r1 = np.random.default_rng(5)
    plain = mlp_onnx(tmp_path / "plain.onnx", r1, sizes=(16, 12, 4))
    two, name = two_output_model(tmp_path / "two.onnx", np.random.default_rng(5))
    data = save(tmp_path / "d.npy", rng.standard_normal((5, 16)).astype(np.float32))
    assert_one_error(infer(two, data, tmp_path / "x.h5"), codes=(1, 2),
                     contains=("output",))
    assert not os.path.exists(tmp_path / "x.h5")
    ref = tmp_path / "ref.h5"
    assert_ok(infer(plain, data, ref))
    out = tmp_path / "o.h5"
    assert_ok(infer(two, data, out, "--model-output", name, n=2))
    assert_same(out, ref)


def test_resume_with_other_model_output_refused(tmp_path, rng):
    """A `--model-output g1` job stopped, resumed with `--model-output r0` (the hidden
    layer, also a float output): refused with one line; the checkpoint still resumes."""
    two, name = two_output_model(tmp_path / "two.onnx", rng)
    data = save(tmp_path / "d.npy", rng.standard_normal((9, 16)).astype(np.float32))
    out = str(tmp_path / "S.h5")
    rc, err = stop_after(out, 1, "infer", two, data, "-o", out, *ARGS, "--model-output",
                         name, n=2, slow="0.3", env={"LRMPI_CACHE_DIR": out + ".c"})
    assert rc == 3, err
    r = infer(two, data, out, "--model-output", "r0", "--resume", args=ARGS)
    assert_one_error(r, codes=(1, 2))
    assert_ok(infer(two, data, out, "--model-output", name, "--resume", args=ARGS))


def test_certified_samples_stay_frozen_across_a_resume(tmp_path, m3):
    """`--rule certified` stopped after resolution 2 (samples certified there) and resumed
    at 3 ranks: a sample certified at resolution r is not refined later (its `refined`
    flag is false after r), its prediction never changes, and it equals the float64
    model's decision (onnxruntime float32 agrees where its margin is clear)."""
    model, data, X = m3
    out = str(tmp_path / "S.h5")
    rc, err = stop_after(out, 2, "infer", model, data, "-o", out, "--planes", "4", n=2,
                         slow="0.3", env={"LRMPI_CACHE_DIR": out + ".c"})
    assert rc in (0, 3), err
    assert_ok(infer(model, data, out, "--resume", args=("--planes", "4"), n=3))
    res = results(out)
    keys = sorted(res)
    certified_at = {}
    for k in keys:
        for i in np.flatnonzero(res[k]["certified"]):
            certified_at.setdefault(i, k)
    assert certified_at, "nothing certified"
    for i, k in certified_at.items():
        later = [j for j in keys if j > k]
        for j in later:
            assert not res[j]["refined"][i], (i, k, j)
            assert res[j]["predicted"][i] == res[k]["predicted"][i], (i, k, j)


def test_keep_latest_infer_sigkill_then_resume_other_count(tmp_path, m3):
    """`infer --keep latest` SIGKILLed (whole job) once resolution 1 is listed at 3 ranks,
    resumed at 2: its one resolution equals the uninterrupted run's last, one file
    listed, no state file left once complete."""
    model, data, _ = m3
    ref = ref_run(tmp_path, model, data, "--keep", "latest")
    out = str(tmp_path / "S.h5")
    from adversary import SLOW
    p = start("infer", model, data, "-o", out, *ARGS, "--keep", "latest", n=3,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.3", "LRMPI_CACHE_DIR": out + ".c"})
    try:
        wait_for(out, 1, p, timeout=60)
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        kill_group(p)
    assert_ok(infer(model, data, out, "--resume", args=ARGS, n=2))
    assert_same(out, ref)
    from adversary import job_folder
    names = os.listdir(job_folder(out))
    assert not [n for n in names if n.startswith("state")], names


def residual_sub_model(path, rng, reverse=False):
    """x -> Gemm -> Relu (r0) -> Gemm (g1); Sub(r0, g1) (or Sub(g1, r0)) -> Gemm -> 4."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             [("W0", (16, 12)), ("b0", (12,)), ("W1", (12, 12)), ("b1", (12,)),
              ("W2", (12, 4)), ("b2", (4,))]]
    N = helper.make_node
    pair = ["g1", "r0"] if reverse else ["r0", "g1"]
    nodes = [N("Gemm", ["x", "W0", "b0"], ["g0"], name="g0"), N("Relu", ["g0"], ["r0"], name="r0"),
             N("Gemm", ["r0", "W1", "b1"], ["g1"], name="g1"),
             N("Sub", pair, ["s"], name="residual_sub"),
             N("Gemm", ["s", "W2", "b2"], ["y"], name="g2")]
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return str(path), {i.name: numpy_helper.to_array(i).astype(np.float64) for i in inits}


@pytest.mark.parametrize("reverse", [False, True])
def test_residual_sub_of_two_activations_imports(tmp_path, rng, reverse):
    """The README lists residual Add/Sub among the imported operators: Sub(r0, Gemm(r0))
    (and Sub(Gemm(r0), r0)) runs, and its scores lie within their bound of the float64
    model."""
    model, w = residual_sub_model(tmp_path / "res.onnx", rng, reverse)
    X = rng.standard_normal((5, 16)).astype(np.float32)
    data = save(tmp_path / "d.npy", X)
    out = tmp_path / "o.h5"
    assert_ok(infer(model, data, out, "--rule", "none"))
    r0 = np.maximum(X.astype(np.float64) @ w["W0"] + w["b0"], 0)
    g1 = r0 @ w["W1"] + w["b1"]
    want = ((g1 - r0) if reverse else (r0 - g1)) @ w["W2"] + w["b2"]
    for k, d in results(out).items():
        assert np.all(np.abs(d["scores"] - want) <= d["bound"][:, None] * (1 + 1e-12)), k
