"""Ninth pass, inputs: values at float64's edges against exact rationals, operands changed
in place while a job runs or between stop and resume, data shapes and dtypes."""
from fractions import Fraction

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, error_lines, kill_group, load, mlp_onnx,
                       run, save, start)
from adversary9 import same_results, wait_completed


def rewrite_in_place(path, array):
    """Write `array`'s bytes over the data of .npy `path` (same inode, same size)."""
    with open(path, "rb") as f:
        head = f.read(256)
    offset = head.index(b"\n") + 1
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.ascontiguousarray(array).tobytes())


def rewrite_after_first(p, out, path, array):
    """Once job `p` has resolution 1 of `out`, `array` over input `path` in place; the
    job's stderr when it ends."""
    try:
        assert wait_completed(out, 1, p)
        rewrite_in_place(path, array)
        return p.communicate(timeout=60)[1]
    finally:
        kill_group(p)


def test_operand_rewritten_in_place_during_crt_job(tmp_path, rng):
    A = rng.standard_normal((64, 24))
    B = rng.standard_normal((24, 16))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    opts = ("--planes", "2", "--final", "crt", "--moduli", "16")
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, *opts))
    out = tmp_path / "C.h5"
    p = start("matmul", a, b, "-o", out, *opts,
              env={"LRMPI_TEST_SLOW_RANK": "0", "LRMPI_TEST_SLOW_S": "0.7"})
    err = rewrite_after_first(p, out, a, 2 * A)
    if p.returncode == 0:
        C, at = load(out)
        C0, _ = load(ref)
        assert np.array_equal(C, C0)
        assert np.abs(C - A @ B).max() <= at["bound_abs"]
    else:
        assert len(error_lines(err)) == 1 and "changed in place" in err, err


def test_infer_data_rewritten_in_place_during_job(tmp_path, rng):
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    X = rng.standard_normal((6, 16)).astype(np.float32)
    x = save(tmp_path / "x.npy", X)
    opts = ("--planes", "3", "--rule", "none")
    env = {"LRMPI_CACHE_DIR": ""}
    ref = tmp_path / "ref.h5"
    assert_ok(run("infer", m, x, "-o", ref, *opts, env=env))
    out = tmp_path / "I.h5"
    p = start("infer", m, x, "-o", out, *opts, n=2,
              env={**env, "LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "0.7",
                   "LRMPI_ROOT_COMPUTES": "no"})
    err = rewrite_after_first(p, out, x, 3 * X)
    if p.returncode == 0:
        assert same_results(out, ref)
    else:
        assert len(error_lines(err)) == 1 and "changed in place" in err, err


@pytest.mark.parametrize("extra", [(), ("--final", "crt", "--moduli", "16"), ("--scale", "tensor")])
def test_near_overflow_and_subnormal_rows_bounds_cover_exact(tmp_path, extra):
    A = np.array([[1.7e308, 1.0, -3.0], [1e-300, 2e-310, 5e-324], [1.0, 2.0, 3.0]])
    B = np.array([[1.0, 0.5], [1.0, -1.0], [0.25, 2.0]])
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "8", *extra))
    exact = [[sum(Fraction(float(A[i, t])) * Fraction(float(B[t, j])) for t in range(3))
              for j in range(2)] for i in range(3)]
    last = None
    with h5py.File(out, "r") as f:
        for k in f["resolutions"]:
            g = f["resolutions"][k]
            C, bound = g["C"][()], g.attrs["bound_abs"]
            assert np.all(np.isfinite(C)), k
            err = max(abs(Fraction(float(C[i, j])) - exact[i][j])
                      for i in range(3) for j in range(2))
            assert bound >= err, (k, bound, float(err))
            assert last is None or bound <= last
            last = bound
    assert last < 1e293


def test_operand_refiled_as_transpose_with_same_bytes_refused_on_resume(tmp_path, rng):
    A = rng.standard_normal((40, 24))
    B = rng.standard_normal((24, 24))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = tmp_path / "C.h5"
    res = run("matmul", a, b, "-o", out, "--planes", "2", "--deadline", "2",
              env={"LRMPI_TEST_SLOW_RANK": "0", "LRMPI_TEST_SLOW_S": "1"})
    assert res.returncode == 3, res.stderr
    np.save(b, np.asfortranarray(B.T))     # the same data bytes, another matrix
    res = run("matmul", a, b, "-o", out, "--planes", "2", "--resume")
    assert_one_error(res, code=1, contains=("inputs differ",))


def test_infer_data_with_an_extra_unit_axis_refused(tmp_path, rng):
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    x = save(tmp_path / "x.npy", rng.standard_normal((5, 1, 16)).astype(np.float32))
    out = tmp_path / "I.h5"
    res = run("infer", m, x, "-o", out, "--planes", "2", env={"LRMPI_CACHE_DIR": ""})
    assert_one_error(res, code=1)
    assert not out.exists()


def test_infer_float16_data_equals_float32_of_same_values(tmp_path, rng):
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    X = rng.standard_normal((5, 16)).astype(np.float16)
    x16 = save(tmp_path / "x16.npy", X)
    x32 = save(tmp_path / "x32.npy", X.astype(np.float32))
    env = {"LRMPI_CACHE_DIR": ""}
    o16, o32 = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(run("infer", m, x16, "-o", o16, "--planes", "2", "--rule", "none", env=env))
    assert_ok(run("infer", m, x32, "-o", o32, "--planes", "2", "--rule", "none", env=env))
    assert same_results(o16, o32)
