"""Seventh adversarial pass, area 4: inputs — 1-D and 0-D operands, HDF5 soft-link loops,
external links to missing files, compound datasets, dataset paths spelled without the
leading slash or with doubled / trailing slashes, a file named `-A.npy`, an NPY with bytes
after its data, operands spanning 600 decades with `--scale tensor`, mixed float32/int16
operands at 3 ranks. The README: bad input is one line, exit 1; every resolution's bound
covers the exact product of the original inputs."""
import os

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, bounded, exact_product, load, max_err,
                       run, save)


@pytest.mark.parametrize("shape", [(24,), ()])
def test_vector_or_scalar_operand_one_line(tmp_path, ops, shape):
    """B a 1-D vector (24,) or a 0-D scalar: one line naming B, exit 1, no output."""
    a, _, A, B = ops
    b = save(tmp_path / "v.npy", np.ones(shape))
    out = tmp_path / "C.h5"
    assert_one_error(run("matmul", a, b, "-o", out), code=1, contains=("B",))
    assert not os.path.exists(out)


@pytest.fixture
def h5ops(tmp_path, ops):
    a, b, A, B = ops
    p = str(tmp_path / "ops.h5")
    with h5py.File(p, "w") as f:
        f["A"] = A
        f["B"] = B
        f["g/A"] = A
        f["loop"] = h5py.SoftLink("/loop")
        f["ext"] = h5py.ExternalLink("missing.h5", "/A")
        f["comp"] = np.zeros((40, 24), np.dtype([("a", "f8"), ("b", "f8")]))
    return p, A, B


@pytest.mark.parametrize("name", ["loop", "ext", "comp"])
def test_hdf5_link_loop_missing_external_and_compound(tmp_path, h5ops, name):
    """`ops.h5:/loop` (a soft link to itself), `ops.h5:/ext` (an external link to a missing
    file), `ops.h5:/comp` (a compound dataset): one line naming A, exit 1, within 20 s."""
    p, A, B = h5ops
    r = bounded("matmul", f"{p}:/{name}", f"{p}:/B", "-o", tmp_path / "C.h5", n=2)
    assert_one_error(r, code=1, contains=("A",))
    assert not os.path.exists(tmp_path / "C.h5")


@pytest.mark.parametrize("spelling", ["A", "//A", "/g/../A", "/g/A"])
def test_dataset_path_spellings_read_the_same_matrix(tmp_path, h5ops, spelling):
    """`ops.h5:A`, `ops.h5://A`, `/g/../A` and `/g/A` (a copy): either one line, or the
    same C bit for bit as `ops.h5:/A`."""
    p, A, B = h5ops
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", f"{p}:/A", f"{p}:/B", "-o", ref, "--planes", "2"))
    out = tmp_path / "C.h5"
    r = run("matmul", f"{p}:{spelling}", f"{p}:/B", "-o", out, "--planes", "2")
    if r.returncode == 0:
        assert np.array_equal(load(out)[0], load(ref)[0])
    else:
        assert_one_error(r, code=1)


def test_operand_file_named_like_an_option(tmp_path, ops):
    """An operand file named `-A.npy`, given as `./-A.npy`: the job runs and equals the
    same operand under a plain name."""
    a, b, A, B = ops
    save(tmp_path / "-A.npy", A)
    out, ref = tmp_path / "C.h5", tmp_path / "R.h5"
    assert_ok(run("matmul", "./-A.npy", b, "-o", out, "--planes", "2", cwd=tmp_path))
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "2"))
    assert np.array_equal(load(out)[0], load(ref)[0])


def test_npy_with_bytes_after_its_data(tmp_path, ops):
    """An NPY file with 7 bytes appended after its data: either one line, or the same C as
    the clean file (the extra bytes never become numbers)."""
    a, b, A, B = ops
    g = save(tmp_path / "G.npy", A)
    with open(g, "ab") as f:
        f.write(b"garbage")
    out, ref = tmp_path / "C.h5", tmp_path / "R.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "2"))
    r = run("matmul", g, b, "-o", out, "--planes", "2")
    if r.returncode == 0:
        assert np.array_equal(load(out)[0], load(ref)[0])
    else:
        assert_one_error(r, code=1)


def test_tensor_scale_over_600_decades_bound_covers_exact(tmp_path, rng):
    """Rows of A from 1e-300 to 1e300, B's columns from 1 to 1e-300, `--scale tensor
    --planes 2` (the small rows vanish at every resolution): every bound covers the exact
    error."""
    A = rng.standard_normal((6, 5)) * np.logspace(-300, 300, 6)[:, None]
    B = rng.standard_normal((5, 4)) * np.logspace(0, -300, 4)[None, :]
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--scale", "tensor"))
    exact = exact_product(A, B)
    with h5py.File(out, "r") as f:
        for k in f["resolutions"]:
            g = f["resolutions"][k]
            assert max_err(g["C"][()], exact) <= g.attrs["bound_abs"], k


def test_subnormal_times_huge_rows_bound_covers_exact(tmp_path):
    """A holds subnormals (5e-324 .. 1e-310), B entries near 1e300: products near 1e-10;
    every resolution's bound covers the exact error (row scale)."""
    A = np.array([[5e-324, 1e-310, -3e-320], [2e-315, -5e-324, 7e-312]])
    B = np.array([[1e300, -2e299], [3e299, 1e300], [-1e300, 5e299]])
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3"))
    exact = exact_product(A, B)
    with h5py.File(out, "r") as f:
        for k in f["resolutions"]:
            g = f["resolutions"][k]
            assert max_err(g["C"][()], exact) <= g.attrs["bound_abs"], k


def test_float32_times_int16_at_three_ranks_exact_last(tmp_path, rng):
    """A float32 with small integer values, B int16 from an .h5 file: at 3 ranks with
    `--planes 3` (21 bits, enough for both) the last resolution is the exact product, and
    bit-identical to a one-rank run."""
    A = rng.integers(-100, 100, (13, 7)).astype(np.float32)
    B = rng.integers(-30000, 30000, (7, 5)).astype(np.int16)
    a = save(tmp_path / "A.npy", A)
    p = str(tmp_path / "B.h5")
    with h5py.File(p, "w") as f:
        f["B"] = B
    out1, out3 = tmp_path / "C1.h5", tmp_path / "C3.h5"
    assert_ok(run("matmul", a, f"{p}:/B", "-o", out1, "--planes", "3"))
    assert_ok(run("matmul", a, f"{p}:/B", "-o", out3, "--planes", "3", n=3))
    C3 = load(out3)[0]
    assert np.array_equal(C3, load(out1)[0])
    assert np.array_equal(C3, A.astype(np.float64) @ B.astype(np.float64))
