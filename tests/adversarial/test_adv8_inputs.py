"""Eighth adversarial pass, area 4: inputs — int8 operands at -128/127, uint64 beyond
float64's mantissa, an inner dimension past the int32 pair-product limit, `.npy` names
with a dataset suffix, a trailing slash, no or an upper-case extension, `-` as an operand,
an HDF5 operand held open for writing by another process, a fletcher32-protected dataset
with a damaged chunk, an HDF5 path with `..`, inference data with no samples. The README:
bounds >= the true error against the exact product of the original inputs; bad input is one
line, exit 1 (or 2), no output, never a hang."""
import os
import subprocess

import h5py
import numpy as np
import pytest

from adversary import (PY, assert_ok, assert_one_error, bounded, load, mlp_onnx, run,
                       save)


def all_resolutions(out):
    with h5py.File(out, "r") as f:
        return [(f["resolutions"][k]["C"][()], f["resolutions"][k].attrs["bound_abs"])
                for k in sorted(f["resolutions"])]


def test_int8_extremes_bounds_cover_exact(tmp_path, rng):
    """int8 operands of -128 and 127 only: every resolution's bound_abs covers the exact
    product; the last one is exact."""
    A = rng.choice(np.array([-128, 127], np.int8), size=(12, 10))
    B = rng.choice(np.array([-128, 127, 0], np.int8), size=(10, 6))
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B),
                  "-o", out, "--planes", "2"))
    exact = A.astype(np.int64) @ B.astype(np.int64)
    for C, bound in all_resolutions(out):
        assert np.abs(C - exact).max() <= bound
    assert np.array_equal(all_resolutions(out)[-1][0], exact.astype(np.float64))


def test_uint64_beyond_float64_mantissa_bound_covers_exact(tmp_path, rng):
    """uint64 entries near 2^64 (2^64-1, 2^63+1): the bound covers the exact product of the
    original integers at every resolution (or the operand is refused with one line)."""
    A = np.array([[2**64 - 1, 2**63 + 1, 3], [1, 2**53 + 1, 2**64 - 2]], np.uint64)
    B = np.array([[1, 0], [0, 1], [5, 7]], np.uint64)
    out = tmp_path / "C.h5"
    r = run("matmul", save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B), "-o", out,
            "--planes", "8")
    if r.returncode != 0:
        assert_one_error(r, code=1)
        return
    exact = [[sum(int(A[i, t]) * int(B[t, j]) for t in range(3)) for j in range(2)]
             for i in range(2)]
    from fractions import Fraction
    for C, bound in all_resolutions(out):
        err = max(abs(Fraction(float(C[i, j])) - exact[i][j]) for i in range(2) for j in range(2))
        assert err <= Fraction(float(bound)), (err, bound)


def test_inner_dimension_past_the_int32_limit_exact(tmp_path, rng):
    """k = 133 200 (past the 133 144 the int32 pair products allow): integer operands of
    14 bits, 2 planes: the last resolution equals the exact integer product."""
    k = 133_200
    A = rng.integers(-2**13, 2**13, size=(2, k)).astype(np.float64)
    B = rng.integers(-2**13, 2**13, size=(k, 2)).astype(np.float64)
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B), "-o",
                  out, "--planes", "2", n=2))
    exact = A.astype(np.int64) @ B.astype(np.int64)
    res = all_resolutions(out)
    for C, bound in res:
        assert np.abs(C - exact).max() <= bound
    assert np.array_equal(res[-1][0], exact.astype(np.float64))


@pytest.mark.parametrize("spell", ["{a}:/x", "{a}/", "-"])
def test_odd_operand_spellings_one_line(tmp_path, ops, spell):
    """`A.npy:/x` (an .npy with a dataset suffix), `A.npy/` (a trailing slash), `-`: one
    line, exit 1 or 2, no output; never a hang on stdin."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    r = bounded("matmul", spell.format(a=a), b, "-o", out, limit=30)
    assert_one_error(r, codes=(1, 2))
    assert not out.exists()


@pytest.mark.parametrize("name", ["Amatrix", "A.NPY"])
def test_npy_content_under_other_names(tmp_path, ops, name):
    """An .npy under a name without extension or with `.NPY`: read as .npy (C as the
    plain run's) or refused with one line naming it."""
    a, b, A, B = ops
    other = tmp_path / name
    os.link(a, other)
    out = tmp_path / "C.h5"
    r = run("matmul", other, b, "-o", out, "--planes", "2")
    if r.returncode == 0:
        assert np.abs(load(out)[0] - A @ B).max() < 0.1
    else:
        assert_one_error(r, codes=(1, 2), contains=(name,))


def test_h5_operand_held_open_for_writing(tmp_path, ops):
    """FILE.h5:/A while another process holds FILE.h5 open for writing (HDF5's lock): the
    job reads it or refuses with one line; never a traceback or a hang."""
    a, b, A, B = ops
    h5 = tmp_path / "in.h5"
    with h5py.File(h5, "w") as f:
        f["A"] = A
    holder = subprocess.Popen([PY, "-c", "import h5py, sys, time\nf = h5py.File(sys.argv[1], 'a')\n"
                               "print('open', flush=True)\ntime.sleep(60)", str(h5)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        out = tmp_path / "C.h5"
        r = bounded("matmul", f"{h5}:/A", b, "-o", out, "--planes", "2", limit=30)
        if r.returncode == 0:
            assert np.abs(load(out)[0] - A @ B).max() < 0.1
        else:
            assert_one_error(r, code=1)
    finally:
        holder.kill()
        holder.communicate()


def test_fletcher32_dataset_with_damaged_chunk_one_line(tmp_path, ops):
    """An HDF5 operand with fletcher32 whose chunk has a flipped byte: one line, exit 1,
    no output (never the damaged numbers)."""
    a, b, A, B = ops
    h5 = tmp_path / "in.h5"
    with h5py.File(h5, "w") as f:
        d = f.create_dataset("A", data=A, chunks=A.shape, fletcher32=True)
        off = d.id.get_offset() if d.id.get_offset() is not None else None
        if off is None:
            off = d.id.get_chunk_info(0).byte_offset
    with open(h5, "r+b") as f:
        f.seek(off + 100)
        x = f.read(1)
        f.seek(off + 100)
        f.write(bytes([x[0] ^ 0xFF]))
    out = tmp_path / "C.h5"
    assert_one_error(run("matmul", f"{h5}:/A", b, "-o", out), code=1)
    assert not out.exists()


def test_h5_dataset_path_with_dotdot(tmp_path, ops):
    """`FILE.h5:/g/../A`: the matrix read (HDF5 has no `..`: then one line naming it)."""
    a, b, A, B = ops
    h5 = tmp_path / "in.h5"
    with h5py.File(h5, "w") as f:
        f["A"] = A
        f.create_group("g")
    out = tmp_path / "C.h5"
    r = run("matmul", f"{h5}:/g/../A", b, "-o", out, "--planes", "2")
    if r.returncode == 0:
        assert np.abs(load(out)[0] - A @ B).max() < 0.1
    else:
        assert_one_error(r, codes=(1, 2))
        assert not out.exists()


def test_infer_data_with_no_samples(tmp_path, rng):
    """Inference data of shape (0, 16): one line, exit 1 (or 2), no output file."""
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    data = save(tmp_path / "d.npy", np.zeros((0, 16), np.float32))
    out = tmp_path / "o.h5"
    assert_one_error(run("infer", model, data, "-o", out, env={"LRMPI_CACHE_DIR": ""}),
                     codes=(1, 2))
    assert not out.exists()
