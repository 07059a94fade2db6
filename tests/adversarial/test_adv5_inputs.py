"""Fifth adversarial pass, area 4: inputs — dtypes and layouts the earlier passes touched
least (long double, enum, big-endian and float16 HDF5 datasets, Fortran order under MPI),
NaN/Inf only in the last row or column, HDF5 datasets whose raw data lives elsewhere."""
from fractions import Fraction

import h5py
import numpy as np
import pytest

from adversary import assert_ok, assert_one_error, load, run, save


def exact_of(A, B):
    """The exact product of the given arrays' own values (long double included)."""
    def fr(x):
        return Fraction(x.item()) if x.dtype != np.longdouble else Fraction(*x.as_integer_ratio())
    m, k = A.shape
    return [[sum(fr(A[i, t]) * fr(B[t, j]) for t in range(k)) for j in range(B.shape[1])]
            for i in range(m)]


def err_of(C, exact):
    return max(abs(Fraction(float(C[i, j])) - exact[i][j])
               for i in range(len(exact)) for j in range(len(exact[0])))


def test_long_double_operand_bound_covers_its_own_values(tmp_path):
    """A long double operand carries digits float64 cannot: the README's bound is against
    the exact product of the *original* inputs, so it must cover them (or the dtype is
    refused with one line, as bool and complex are)."""
    one = np.longdouble(1)
    A = np.array([[one + one / 2**60, -one]], dtype=np.longdouble)
    assert A[0, 0] != 1                     # the platform's long double holds the digit
    B = np.ones((2, 1))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "16")
    if r.returncode != 0:
        assert_one_error(r, code=1)
        return
    C, attrs = load(out)
    assert err_of(C, exact_of(A, B)) <= attrs["bound_abs"]


def test_nan_only_in_last_row_or_last_column(tmp_path, rng):
    """NaN in A's last row only, +Inf in B's last column only: refused with one line naming
    the operand, no output made (a scan that stops one short would miss them)."""
    A = rng.standard_normal((9, 6))
    B = rng.standard_normal((6, 5))
    A_bad = A.copy()
    A_bad[-1, -1] = np.nan
    B_bad = B.copy()
    B_bad[-1, -1] = np.inf
    for name, (x, y) in {"A": (A_bad, B), "B": (A, B_bad)}.items():
        a, b = save(tmp_path / f"A{name}.npy", x), save(tmp_path / f"B{name}.npy", y)
        out = tmp_path / f"C{name}.h5"
        r = run("matmul", a, b, "-o", out)
        line = assert_one_error(r, code=1)
        assert line.startswith(f"lrmpi: error: {name}"), line
        assert not out.exists()


def test_nan_in_last_column_of_big_endian_fortran_h5(tmp_path, rng):
    """The same NaN in the last column of a big-endian, Fortran-ordered-then-stored HDF5
    dataset under `mpiexec -n 2`: one line, exit 1, nothing written."""
    A = rng.standard_normal((12, 7)).astype(">f8")
    A[-1, -1] = np.nan
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f.create_dataset("A", data=A, chunks=(3, 7), compression="gzip")
    b = save(tmp_path / "B.npy", rng.standard_normal((7, 4)))
    out = tmp_path / "C.h5"
    r = run("matmul", f"{tmp_path}/in.h5:/A", b, "-o", out, n=2)
    assert_one_error(r, code=1, contains=("nan",))
    assert not out.exists()


def test_h5_external_storage_shorter_than_declared(tmp_path):
    """An HDF5 dataset stored in an external raw file that holds 40 of the 160 bytes it
    declares: like a truncated `.npy` (refused) and a virtual dataset whose source is gone
    (refused: HDF5 would read fill values), it is one line, never zeros."""
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f.create_dataset("A", shape=(5, 4), dtype="f8", external=[("raw.bin", 0, 160)])
    np.arange(5.0).tofile(tmp_path / "raw.bin")         # 40 bytes of 160
    b = save(tmp_path / "B.npy", np.ones((4, 3)))
    out = tmp_path / "C.h5"
    r = run("matmul", "in.h5:/A", b, "-o", out, cwd=tmp_path)
    assert_one_error(r, code=1, contains=("in.h5",))
    assert not out.exists()


def test_h5_external_storage_missing_file(tmp_path):
    """External raw storage whose file does not exist: one line naming the dataset."""
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f.create_dataset("A", shape=(5, 4), dtype="f8", external=[("gone.bin", 0, 160)])
    b = save(tmp_path / "B.npy", np.ones((4, 3)))
    r = run("matmul", "in.h5:/A", b, "-o", tmp_path / "C.h5", cwd=tmp_path)
    assert_one_error(r, code=1, contains=("in.h5",))
    assert not (tmp_path / "C.h5").exists()


def test_h5_float16_bigendian_and_enum_datasets_as_values(tmp_path, rng):
    """HDF5 operands of float16, big-endian float64 and an int8-based enum are multiplied as
    their values: the bound covers the exact product."""
    A16 = rng.standard_normal((6, 5)).astype(np.float16)
    Abe = rng.standard_normal((6, 5)).astype(">f8")
    Aen = rng.integers(0, 3, (6, 5)).astype(np.int8)
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["f16"] = A16
        f["be"] = Abe
        f.create_dataset("enum", data=Aen,
                         dtype=h5py.enum_dtype({"a": 0, "b": 1, "c": 2}, basetype="i1"))
    B = rng.standard_normal((5, 4))
    b = save(tmp_path / "B.npy", B)
    for name, A in {"f16": A16, "be": Abe, "enum": Aen}.items():
        out = tmp_path / f"C{name}.h5"
        assert_ok(run("matmul", f"{tmp_path}/in.h5:/{name}", b, "-o", out, "--planes", "3"))
        C, attrs = load(out)
        assert err_of(C, exact_of(A.astype(np.float64), B)) <= attrs["bound_abs"], name


def test_h5_chunked_never_written_nan_fill(tmp_path):
    """A chunked dataset never written, its fill value NaN: HDF5 reads NaN; refused."""
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f.create_dataset("A", shape=(5, 4), chunks=(1, 4), dtype="f8", fillvalue=np.nan)
    b = save(tmp_path / "B.npy", np.ones((4, 3)))
    r = run("matmul", f"{tmp_path}/in.h5:/A", b, "-o", tmp_path / "C.h5")
    assert_one_error(r, code=1, contains=("nan",))


@pytest.mark.parametrize("make, word", [
    (lambda: np.zeros((4, 3), dtype="datetime64[s]"), "datetime64"),
    (lambda: np.zeros((4, 3), dtype="V8"), "V8"),
    (lambda: np.full((4, 3), 2**64 - 1, dtype=np.uint64), "2^53"),
])
def test_time_void_and_huge_unsigned_dtypes_one_line(tmp_path, make, word):
    """datetime64, raw void and uint64 beyond 2^53: one line naming A."""
    a = save(tmp_path / "A.npy", make())
    b = save(tmp_path / "B.npy", np.ones((3, 2)))
    r = run("matmul", a, b, "-o", tmp_path / "C.h5")
    line = assert_one_error(r, code=1)
    assert line.startswith("lrmpi: error: A"), line
    assert not (tmp_path / "C.h5").exists()


def test_fortran_order_big_endian_bit_identical_at_three_ranks(tmp_path, rng):
    """A Fortran-ordered big-endian A and a float32 B under `mpiexec -n 3`: bit-identical to
    the same values as C-ordered native float64 run alone."""
    A = rng.standard_normal((30, 11))
    B = rng.standard_normal((11, 9)).astype(np.float32)
    a1 = save(tmp_path / "A1.npy", np.asfortranarray(A.astype(">f8")))
    b1 = save(tmp_path / "B1.npy", B)
    a2 = save(tmp_path / "A2.npy", A)
    b2 = save(tmp_path / "B2.npy", B.astype(np.float64))
    assert_ok(run("matmul", a1, b1, "-o", tmp_path / "C1.h5", "--planes", "3", n=3))
    assert_ok(run("matmul", a2, b2, "-o", tmp_path / "C2.h5", "--planes", "3"))
    assert np.array_equal(load(tmp_path / "C1.h5")[0], load(tmp_path / "C2.h5")[0])
