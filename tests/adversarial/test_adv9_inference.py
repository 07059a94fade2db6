"""Ninth pass, inference: ONNX graphs of odd but valid form (negative slice steps,
negative and repeated gather indices, LeakyRelu with a negative slope, Clip with a lower
bound only, PRelu slopes beyond 1, a constant minus an activation, a tensor concatenated
with itself then split unequally), bounds consistent between resolutions and the last
close to onnxruntime; several jobs sharing one cold cache; integer outputs."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adversary import (assert_ok, assert_one_error, mlp_onnx, ort_scores, run, save)
from adversary9 import datasets, same_results

R = np.random.default_rng(97)
W1 = R.standard_normal((16, 12)).astype(np.float32)
W2 = R.standard_normal((12, 4)).astype(np.float32)


def I(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def i64(*v):
    return np.array(v, np.int64)


def gemm1(extra_nodes, extra_inits, last_in, w2=W2):
    nodes = [helper.make_node("Gemm", ["x", "W1"], ["h"]), *extra_nodes,
             helper.make_node("Gemm", [last_in, "W2"], ["y"])]
    return nodes, [I("W1", W1), I("W2", w2), *extra_inits]


CASES = {
    "slice_negative_step": gemm1(
        [helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Slice", ["r", "st", "en", "ax", "sp"], ["s"])],
        [I("st", i64(-1)), I("en", i64(-100)), I("ax", i64(1)), I("sp", i64(-1))], "s"),
    "gather_negative_repeated": gemm1(
        [helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gather", ["r", "ix"], ["s"], axis=1)],
        [I("ix", i64(-1, -1, 0, 3, 5, -12, 2, 2, 7, 8, 9, 10))], "s"),
    "leaky_negative_alpha_clip_min_only": gemm1(
        [helper.make_node("LeakyRelu", ["h"], ["r"], alpha=-2.0),
         helper.make_node("Clip", ["r", "lo"], ["s"])],
        [I("lo", np.array(-0.5, np.float32))], "s"),
    "prelu_big_slopes_constant_minus_activation": gemm1(
        [helper.make_node("PRelu", ["h", "sl"], ["r"]),
         helper.make_node("Sub", ["k", "r"], ["s"])],
        [I("sl", (R.standard_normal(12) * 3).astype(np.float32)),
         I("k", R.standard_normal(12).astype(np.float32))], "s"),
    "concat_self_split_unequal": gemm1(
        [helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Concat", ["r", "r"], ["c"], axis=1),
         helper.make_node("Split", ["c", "sz"], ["a", "b"], axis=1),
         helper.make_node("Slice", ["b", "st", "en", "ax"], ["b2"]),
         helper.make_node("Add", ["a", "b2"], ["s"])],
        [I("sz", i64(5, 19)), I("st", i64(0)), I("en", i64(5)), I("ax", i64(1))], "s",
        w2=R.standard_normal((5, 4)).astype(np.float32)),
}


def save_model(path, nodes, inits, extra_outputs=()):
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]), *extra_outputs],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return str(path)


@pytest.mark.parametrize("case", sorted(CASES))
def test_odd_valid_graph_bounds_consistent_and_close_to_ort(tmp_path, case):
    nodes, inits = CASES[case]
    m = save_model(tmp_path / "m.onnx", nodes, inits)
    X = R.standard_normal((5, 16)).astype(np.float32)
    x = save(tmp_path / "x.npy", X)
    out = tmp_path / "I.h5"
    assert_ok(run("infer", m, x, "-o", out, "--planes", "6", "--rule", "none",
                  env={"LRMPI_CACHE_DIR": ""}))
    res = datasets(out)
    last = max(res)
    sl, bl = res[last]["scores"], res[last]["bound"]
    # |s_r - f| <= b_r and |s_last - f| <= b_last, so |s_r - s_last| <= b_r + b_last
    for k, d in res.items():
        assert np.all(np.abs(d["scores"] - sl) <= (d["bound"] + bl)[:, None]), k
    ort = ort_scores(m, X)
    assert np.abs(sl - ort).max() <= 1e-5 * np.abs(ort).max()
    assert bl.max() < 1e-6 * np.abs(ort).max()


def test_weights_on_the_left_through_transposes_refused_naming_node(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Transpose", ["r"], ["rt"], perm=[1, 0]),
             helper.make_node("MatMul", ["W2t", "rt"], ["yt"]),
             helper.make_node("Transpose", ["yt"], ["y"], perm=[1, 0])]
    m = save_model(tmp_path / "m.onnx", nodes, [I("W1", W1), I("W2t", W2.T.copy())])
    x = save(tmp_path / "x.npy", R.standard_normal((3, 16)).astype(np.float32))
    out = tmp_path / "I.h5"
    res = run("infer", m, x, "-o", out, env={"LRMPI_CACHE_DIR": ""})
    assert_one_error(res, code=1, contains=("transpose", "batch"))
    assert not out.exists()


def test_model_output_naming_an_integer_output_refused(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "W1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2"], ["y"]),
             helper.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0)]
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])
    m = save_model(tmp_path / "m.onnx", nodes, [I("W1", W1), I("W2", W2)], (label,))
    x = save(tmp_path / "x.npy", R.standard_normal((3, 16)).astype(np.float32))
    plain = tmp_path / "P.h5"
    assert_ok(run("infer", m, x, "-o", plain, "--planes", "2", env={"LRMPI_CACHE_DIR": ""}))
    out = tmp_path / "I.h5"
    res = run("infer", m, x, "-o", out, "--planes", "2", "--model-output", "label",
              env={"LRMPI_CACHE_DIR": ""})
    assert_one_error(res, codes=(1, 2), contains=("label",))
    assert not out.exists()


def test_three_jobs_two_models_share_one_cold_cache_at_once(tmp_path):
    import subprocess
    from adversary import cmd
    rng = np.random.default_rng(971)
    m1 = mlp_onnx(tmp_path / "m1.onnx", rng, sizes=(96, 160, 160, 5))
    m2 = mlp_onnx(tmp_path / "m2.onnx", rng, sizes=(96, 160, 160, 5))
    x = save(tmp_path / "x.npy", rng.standard_normal((4, 96)).astype(np.float32))
    args = ("--planes", "3", "--rule", "none")
    refs = {}
    for m in (m1, m2):
        refs[m] = tmp_path / (os.path.basename(m) + ".ref.h5")
        assert_ok(run("infer", m, x, "-o", refs[m], *args, env={"LRMPI_CACHE_DIR": ""}))
    cache = tmp_path / "cache"
    env = {**os.environ, "LRMPI_CACHE_DIR": str(cache)}
    jobs = [(m1, tmp_path / "a.h5"), (m2, tmp_path / "b.h5"), (m1, tmp_path / "c.h5")]
    procs = [subprocess.Popen(cmd("infer", m, x, "-o", o, *args), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for m, o in jobs]
    for p in procs:
        _, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
    for m, o in jobs:
        assert same_results(o, refs[m])
    assert not [f for f in os.listdir(cache) if ".tmp" in f], os.listdir(cache)
