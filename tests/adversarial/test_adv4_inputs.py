"""Fourth adversarial pass, area 4: inputs — odd names (newlines, blanks at the ends,
250 characters, `..`), permissions, read-only folders, inner dimension 1."""
import os

import h5py
import numpy as np

from adversary import (assert_ok, assert_one_error, attrs_of, exact_product, load, max_err,
                      run, run_nocap, save, snapshot)


def test_newline_unicode_and_dotdot_in_operand_paths(tmp_path, rng):
    """Operands in a folder whose name holds a newline, a tab and non-ASCII, given as
    relative paths through `..` from another folder: the same C as plain names."""
    A, B = rng.standard_normal((9, 7)), rng.standard_normal((7, 5))
    odd = tmp_path / "dir\nwith\tnew line ünï"
    odd.mkdir()
    (tmp_path / "cwd").mkdir()
    save(odd / "Ä b.npy", A)
    save(odd / "B\n.npy", B)
    rel = os.path.join("..", odd.name)
    out = tmp_path / "cwd" / "C.h5"
    assert_ok(run("matmul", os.path.join(rel, "Ä b.npy"), os.path.join(rel, "B\n.npy"),
                  "-o", "C.h5", "--planes", "2", cwd=tmp_path / "cwd"))
    ref = tmp_path / "R.h5"
    assert_ok(run("matmul", save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B), "-o", ref,
                  "--planes", "2"))
    assert np.array_equal(load(out)[0], load(ref)[0])


def test_leading_blanks_of_a_name_are_part_of_it(tmp_path, rng):
    """`A.npy` and `  A.npy` are two files: the operand named with leading blanks is the one used
    (never stripped to the other)."""
    A, X, B = (rng.standard_normal((6, 4)), rng.standard_normal((6, 4)) * 100,
               rng.standard_normal((4, 3)))
    save(tmp_path / "A.npy", A)
    os.rename(save(tmp_path / "tmpX.npy", X), tmp_path / "  A.npy")
    b = save(tmp_path / "B.npy", B)
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", "  A.npy", b, "-o", out, "--planes", "3", cwd=tmp_path))
    C, attrs = load(out)
    assert np.abs(C - X @ B).max() <= attrs["bound_abs"]
    assert np.abs(C - A @ B).max() > 1


def test_operand_name_of_250_characters(tmp_path, rng):
    """An operand whose name is 250 characters (the file system allows 255): read as any."""
    A, B = rng.standard_normal((5, 4)), rng.standard_normal((4, 3))
    a = save(tmp_path / ("a" * 246 + ".npy"), A)
    b = save(tmp_path / "B.npy", B)
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3"))
    C, attrs = load(out)
    assert np.abs(C - A @ B).max() <= attrs["bound_abs"]


def test_unreadable_h5_operand_one_line(tmp_path, rng):
    """An HDF5 operand file the user may not read: one line naming it, exit 1."""
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["A"] = rng.standard_normal((5, 4))
    b = save(tmp_path / "B.npy", rng.standard_normal((4, 3)))
    os.chmod(tmp_path / "in.h5", 0)
    try:
        r = run_nocap("matmul", f"{tmp_path}/in.h5:/A", b, "-o", tmp_path / "C.h5")
        assert_one_error(r, code=1, contains=("in.h5",))
    finally:
        os.chmod(tmp_path / "in.h5", 0o644)
    assert not (tmp_path / "C.h5").exists()


def test_operands_in_a_read_only_folder(tmp_path, rng):
    """Operands in a folder the user may not write (read-only data), output elsewhere:
    reading needs no write; the job completes."""
    A, B = rng.standard_normal((7, 5)), rng.standard_normal((5, 4))
    data = tmp_path / "data"
    data.mkdir()
    a, b = save(data / "A.npy", A), save(data / "B.npy", B)
    os.chmod(data, 0o555)
    try:
        out = tmp_path / "C.h5"
        assert_ok(run_nocap("matmul", a, b, "-o", out, "--planes", "3"))
    finally:
        os.chmod(data, 0o755)
    C, attrs = load(out)
    assert np.abs(C - A @ B).max() <= attrs["bound_abs"]


def test_resume_of_complete_job_with_changed_values_same_shape(tmp_path, done, rng):
    """A complete result resumed after B was rewritten with other values of the same
    shape: refused with one line (inputs differ), the checkpoint unchanged."""
    out, a, b, A, B = done
    before = snapshot(out + ".d")
    save(b, B + rng.standard_normal(B.shape) * 1e-3)
    assert_one_error(run("matmul", a, b, "-o", out, "--planes", "2", "--resume"), codes=(1, 2))
    assert snapshot(out + ".d") == before
    assert attrs_of(out)["status"] == "complete"


def test_inner_dimension_one_wide_range(tmp_path):
    """k = 1 (an outer product) with entries from 1e-30 to 1e30: every resolution's bound
    covers the exact product (Python fractions)."""
    A = np.array([[1e30], [1.0], [-3e-30], [0.0]])
    B = np.array([[1e-30, 7.0, -1e30]])
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    C, attrs = load(out)
    assert float(max_err(C, exact_product(A, B))) <= attrs["bound_abs"]
