"""Area 4: inputs — operand files, dtypes, shapes, paths."""
import os

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, exact_product, load, max_err, run, save)


def product_ok(tmp_path, a, b, A, B, planes="3", n=None):
    """Runs the product; the final bound covers the true error (exact rationals)."""
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", planes, n=n))
    C, attrs = load(out)
    assert C.shape == (A.shape[0], B.shape[1])
    assert max_err(C, exact_product(np.asarray(A, np.float64), np.asarray(B, np.float64))) \
        <= attrs["bound_abs"]
    return C


def test_fortran_order_and_big_endian(tmp_path, rng):
    A = np.asfortranarray(rng.standard_normal((12, 9)))
    B = rng.standard_normal((9, 7)).astype(">f8")
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    C = product_ok(tmp_path, a, b, A, B)
    ref = tmp_path / "ref"
    ref.mkdir()
    C2 = product_ok(ref, save(ref / "A.npy", np.ascontiguousarray(A)),
                    save(ref / "B.npy", B.astype("<f8")), A, B)
    assert np.array_equal(C, C2)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "uint8", "int32", "int64"])
def test_numeric_dtypes(tmp_path, rng, dtype):
    """Every real numeric dtype is multiplied as its values (or refused with one line)."""
    if dtype.startswith(("int", "uint")):
        A = rng.integers(0, 100, (10, 8)).astype(dtype)
        B = rng.integers(0, 100, (8, 6)).astype(dtype)
    else:
        A = rng.standard_normal((10, 8)).astype(dtype)
        B = rng.standard_normal((8, 6)).astype(dtype)
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    product_ok(tmp_path, a, b, A, B)


def test_int64_beyond_float64_mantissa(tmp_path):
    """int64 entries near 2**62 (not exact in float64): the bound covers the product of the
    given integers, or the input is refused with one line."""
    A = np.array([[2**62 + 1, -(2**61) - 3], [7, 2**53 + 1]], dtype=np.int64)
    B = np.array([[1, 2**40 + 5], [3, -1]], dtype=np.int64)
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "8")
    if r.returncode != 0:
        assert_one_error(r, code=1)
        return
    from fractions import Fraction
    C, attrs = load(out)
    exact = [[sum(Fraction(int(A[i, t])) * int(B[t, j]) for t in range(2)) for j in range(2)]
             for i in range(2)]
    err = max(abs(Fraction(float(C[i, j])) - exact[i][j]) for i in range(2) for j in range(2))
    assert err <= attrs["bound_abs"], (err, attrs["bound_abs"])


@pytest.mark.parametrize("shapes", [((5,), (5, 3)), ((2, 3, 4), (4, 2)), ((4, 3), (4, 3)),
                                    ((3, 0), (0, 2)), ((), (1, 1))])
def test_bad_shapes(tmp_path, shapes):
    sa, sb = shapes
    a = save(tmp_path / "A.npy", np.ones(sa))
    b = save(tmp_path / "B.npy", np.ones(sb))
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out)
    assert_one_error(r, code=1)
    assert not out.exists()


def test_hdf5_compressed_chunked_and_scalar_group(tmp_path, rng):
    """Operands from gzip-compressed chunked datasets in nested groups; a group or a missing
    dataset as an operand is one line."""
    A = rng.standard_normal((14, 10))
    B = rng.standard_normal((10, 6))
    f5 = tmp_path / "in.h5"
    with h5py.File(f5, "w") as f:
        f.create_dataset("g/h/A", data=A, chunks=(3, 3), compression="gzip", shuffle=True)
        f.create_dataset("B", data=B.T.copy().T, chunks=True, compression="lzf")
        f.create_dataset("S", data=3.0)
    product_ok(tmp_path, f"{f5}:/g/h/A", f"{f5}:/B", A, B)
    for bad in ("/g", "/nope", "", "/S"):
        r = run("matmul", f"{f5}:{bad}", f"{f5}:/B", "-o", tmp_path / "D.h5")
        assert_one_error(r, code=1)


def test_file_name_with_colon_and_spaces(tmp_path, rng):
    """A .npy whose name has a colon and spaces (`my data:v2.npy`) is a file, not a dataset
    path — or, if the syntax cannot tell, one line naming it."""
    A = rng.standard_normal((6, 5))
    B = rng.standard_normal((5, 4))
    a = save(tmp_path / "my data:v2.npy", A)
    b = save(tmp_path / "B b.npy", B)
    out = tmp_path / "out put.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "2")
    if r.returncode == 0:
        C, attrs = load(out)
        assert max_err(C, exact_product(A, B)) <= attrs["bound_abs"]
    else:
        assert_one_error(r, code=1)


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/proc/self/status", "DIR"])
def test_special_files_as_operand(tmp_path, ops, path):
    """Devices, /proc files and folders as an operand: one line, promptly."""
    _, b, _, _ = ops
    if path == "DIR":
        path = str(tmp_path)
    r = run("matmul", path, b, "-o", tmp_path / "C.h5", timeout=30)
    assert_one_error(r, code=1)


def test_all_zero_and_subnormal(tmp_path):
    """All-zero A gives C = 0 with a finite bound; subnormal entries are not lost beyond
    the bound."""
    Z = np.zeros((5, 4))
    B = np.array([[5e-324, 1e-310, 2.2e-308, 1.0]] * 4).T.copy()   # 4x4 with subnormals
    A = np.array([[1e-300, 1.0, -1e-310, 3.0]] * 5)
    z = save(tmp_path / "Z.npy", Z)
    b = save(tmp_path / "B.npy", B)
    out = tmp_path / "Z.h5"
    assert_ok(run("matmul", z, b, "-o", out, "--planes", "2"))
    C, attrs = load(out)
    assert not C.any() and np.isfinite(attrs["bound_abs"])
    product_ok(tmp_path, save(tmp_path / "A.npy", A), b, A, B, planes="8")


def test_same_file_both_operands_under_mpi(tmp_path, rng):
    """A.npy A.npy (square) at -n 3 equals A@A within the bound."""
    A = rng.standard_normal((9, 9))
    a = save(tmp_path / "A.npy", A)
    product_ok(tmp_path, a, a, A, A, n=3)


def test_npy_truncated_payload_and_bad_magic(tmp_path, ops):
    """An .npy cut inside its data, and one whose magic is damaged: one line each, under
    mpiexec -n 3 too."""
    a, b, A, _ = ops
    with open(a, "rb") as f:
        raw = f.read()
    cut = tmp_path / "cut.npy"
    cut.write_bytes(raw[: len(raw) - 100])
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPX" + raw[6:])
    for p in (cut, bad):
        for n in (None, 3):
            r = run("matmul", p, b, "-o", tmp_path / "C.h5", n=n, timeout=60)
            assert_one_error(r, code=1)


def test_npz_as_operand(tmp_path, ops):
    """An .npz (several arrays) as an operand: one line, not a pickle load."""
    _, b, A, _ = ops
    z = tmp_path / "A.npz"
    np.savez(z, A=A)
    r = run("matmul", z, b, "-o", tmp_path / "C.h5")
    assert_one_error(r, code=1)


def test_relative_paths_from_other_cwd(tmp_path, rng):
    """Relative operand and output paths resolve against the caller's folder under
    mpiexec -n 2 (rank 0 reads)."""
    A = rng.standard_normal((6, 5))
    B = rng.standard_normal((5, 4))
    sub = tmp_path / "work"
    sub.mkdir()
    save(sub / "A.npy", A)
    save(sub / "B.npy", B)
    r = run("matmul", "A.npy", "B.npy", "-o", "C.h5", "--planes", "2", n=2, cwd=sub)
    assert_ok(r)
    C, attrs = load(sub / "C.h5")
    assert max_err(C, exact_product(A, B)) <= attrs["bound_abs"]


def test_huge_dynamic_range_rows(tmp_path):
    """Rows spanning 1e-200 .. 1e200 with the default row scale: bound covers the error
    (or is inf with C inf), never a NumPy warning."""
    A = np.array([[1e200, 1e-200], [1e-200, 1e200], [1.0, -1.0]])
    B = np.array([[1e-200, 1.0], [1.0, 1e-200]])
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    product_ok(tmp_path, a, b, A, B, planes="4")


def test_virtual_dataset_operand_with_missing_source(tmp_path, ops):
    """FILE.h5:/A where A is a virtual dataset over a file that was deleted: HDF5 reads fill
    values; lrmpi must refuse (a missing input), never multiply fill values."""
    _, b, A, _ = ops
    src = _vds(tmp_path, A)
    os.remove(src)
    out = tmp_path / "C.h5"
    r = run("matmul", f"{tmp_path / 'vds.h5'}:/A", b, "-o", out, "--planes", "1")
    assert_one_error(r, code=1)


def test_virtual_dataset_operand_intact_source(tmp_path, ops):
    """The same virtual dataset with its source present is read as its data."""
    _, b, A, B = ops
    _vds(tmp_path, A)
    product_ok(tmp_path, f"{tmp_path / 'vds.h5'}:/A", b, A, B, planes="2")


def _vds(tmp_path, A):
    """vds.h5:/A, a virtual dataset (fill value 7) over src.h5:/A; returns src.h5's path."""
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["A"] = A
    lay = h5py.VirtualLayout(shape=A.shape, dtype="f8")
    lay[:] = h5py.VirtualSource(str(src), "A", shape=A.shape)
    with h5py.File(tmp_path / "vds.h5", "w") as f:
        f.create_virtual_dataset("A", lay, fillvalue=7.0)
    return src
