"""Second adversarial pass, area 4: operands — odd names and paths, links, HDF5 links and
dtypes, .npy format versions, NaN/Inf, tiny and skinny shapes, inputs replaced before a resume."""
import os

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, exact_product, load, max_err, run, save,
                      stop_after)


def _final_bound_covers(out, A, B):
    C, attrs = load(out)
    with h5py.File(out, "r") as f:
        last = f["resolutions"][sorted(f["resolutions"].keys())[-1]]
        bound = float(last.attrs["bound_abs"])
    assert max_err(C, exact_product(A, B)) <= bound
    return C


def test_unicode_and_blank_paths_everywhere(tmp_path, rng):
    """Operands and output in a folder `données ü/` with names `Ä matrix.npy`, `B 2.npy`,
    `résultat ✓.h5`: completes at -n 2, inspect and pack read it."""
    d = tmp_path / "données ü"
    d.mkdir()
    A, B = rng.standard_normal((9, 7)), rng.standard_normal((7, 5))
    a, b = save(d / "Ä matrix.npy", A), save(d / "B 2.npy", B)
    out = str(d / "résultat ✓.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", n=2))
    _final_bound_covers(out, A, B)
    assert run("inspect", out).returncode == 0
    assert_ok(run("pack", out, str(d / "ein ✓.h5")))


def test_very_long_path(tmp_path, rng):
    """A path of ~1500 characters (six nested 240-character folder names): completes or one
    line, never a traceback."""
    d = tmp_path
    for i in range(6):
        d = d / (f"{i}" * 240)
    d.mkdir(parents=True)
    A, B = rng.standard_normal((5, 4)), rng.standard_normal((4, 3))
    a, b = save(d / "A.npy", A), save(d / "B.npy", B)
    r = run("matmul", a, b, "-o", d / "C.h5", "--planes", "1")
    if r.returncode == 0:
        assert_ok(r)
        _final_bound_covers(str(d / "C.h5"), A, B)
    else:
        assert_one_error(r, codes=(1, 2))


def test_operands_through_symlinks_and_hardlinks(tmp_path, rng):
    """A given through a symlink, B through a hardlink: the same product as the files."""
    A, B = rng.standard_normal((8, 6)), rng.standard_normal((6, 4))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    os.symlink(a, tmp_path / "Alink.npy")
    os.link(b, tmp_path / "Bhard.npy")
    assert_ok(run("matmul", tmp_path / "Alink.npy", tmp_path / "Bhard.npy", "-o",
                  tmp_path / "C.h5", "--planes", "2"))
    assert_ok(run("matmul", a, b, "-o", tmp_path / "D.h5", "--planes", "2"))
    assert np.array_equal(load(tmp_path / "C.h5")[0], load(tmp_path / "D.h5")[0])


def test_npy_format_version_2_and_3(tmp_path, rng):
    """.npy files written with format versions 2.0 and 3.0 read as their values."""
    A, B = rng.standard_normal((6, 5)), rng.standard_normal((5, 4))
    for ver in ((2, 0), (3, 0)):
        a, b = tmp_path / f"A{ver[0]}.npy", tmp_path / f"B{ver[0]}.npy"
        for path, arr in ((a, A), (b, B)):
            with open(path, "wb") as f:
                np.lib.format.write_array(f, arr, version=ver)
        out = str(tmp_path / f"C{ver[0]}.h5")
        assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
        _final_bound_covers(out, A, B)


@pytest.mark.parametrize("kind", ["structured", "zero_d", "datetime", "void"])
def test_odd_npy_dtypes_one_line(tmp_path, rng, kind):
    """A structured array, a 0-d array, datetime64 and raw void .npy files: one line."""
    arr = {"structured": np.zeros((4, 3), dtype=[("x", "f8"), ("y", "f8")]),
           "zero_d": np.array(3.0),
           "datetime": np.zeros((4, 3), dtype="datetime64[s]"),
           "void": np.zeros((4, 3), dtype="V8")}[kind]
    a = save(tmp_path / "A.npy", arr)
    b = save(tmp_path / "B.npy", rng.standard_normal((3, 2)))
    assert_one_error(run("matmul", a, b, "-o", tmp_path / "C.h5", n=2), codes=(1, 2))
    assert not (tmp_path / "C.h5").exists()


@pytest.mark.parametrize("where", ["A_nan", "B_inf", "B_neg_inf"])
def test_nan_inf_in_one_operand_at_three_ranks(tmp_path, rng, where):
    """One NaN or Inf deep inside one operand at -n 3: one line, exit 1, no output kept."""
    A, B = rng.standard_normal((30, 20)), rng.standard_normal((20, 10))
    if where == "A_nan":
        A[17, 11] = np.nan
    elif where == "B_inf":
        B[19, 9] = np.inf
    else:
        B[0, 0] = -np.inf
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    assert_one_error(run("matmul", a, b, "-o", tmp_path / "C.h5", n=3), code=1)


def test_hdf5_soft_and_external_links_to_datasets(tmp_path, rng):
    """FILE.h5:/soft (a soft link) and FILE.h5:/ext (an external link to another file's
    dataset) read as the data they point at."""
    A, B = rng.standard_normal((7, 5)), rng.standard_normal((5, 3))
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f["B"] = B
    with h5py.File(tmp_path / "ops.h5", "w") as f:
        f["data/A"] = A
        f["soft"] = h5py.SoftLink("/data/A")
        f["ext"] = h5py.ExternalLink("src.h5", "/B")
    out = str(tmp_path / "C.h5")
    r = run("matmul", f"{tmp_path / 'ops.h5'}:/soft", f"{tmp_path / 'ops.h5'}:/ext", "-o", out,
            "--planes", "2", cwd=tmp_path)
    if r.returncode == 0:
        _final_bound_covers(out, A, B)
    else:
        assert_one_error(r, code=1)


def test_hdf5_dataset_with_blank_and_unicode_name(tmp_path, rng):
    """FILE.h5:/my group/Ä data: the name is taken as written."""
    A, B = rng.standard_normal((6, 4)), rng.standard_normal((4, 3))
    with h5py.File(tmp_path / "ops.h5", "w") as f:
        f["my group/Ä data"] = A
        f["B"] = B
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", f"{tmp_path / 'ops.h5'}:/my group/Ä data",
                  f"{tmp_path / 'ops.h5'}:/B", "-o", out, "--planes", "2"))
    _final_bound_covers(out, A, B)


@pytest.mark.parametrize("spec", ["compound", "root", "empty_name", "huge"])
def test_hdf5_bad_datasets_one_line(tmp_path, rng, spec):
    """A compound dtype, the root group `FILE.h5:/`, `FILE.h5:` (no dataset) and a chunked
    dataset declared 10^6 x 10^6 with nothing written: one line, promptly, nothing written."""
    with h5py.File(tmp_path / "ops.h5", "w") as f:
        f["comp"] = np.zeros((4, 3), dtype=[("a", "f8"), ("b", "i4")])
        f.create_dataset("huge", shape=(10**6, 10**6), dtype="f8", chunks=(128, 128))
        f["B"] = rng.standard_normal((3, 2))
    name = {"compound": "/comp", "root": "/", "empty_name": "", "huge": "/huge"}[spec]
    b = f"{tmp_path / 'ops.h5'}:/B" if spec != "huge" else save(tmp_path / "B.npy",
                                                                 np.ones((10**6, 2)))
    r = run("matmul", f"{tmp_path / 'ops.h5'}:{name}", b, "-o", tmp_path / "C.h5", timeout=60)
    assert_one_error(r, code=1)
    assert not (tmp_path / "C.h5").exists()


def test_one_by_one_and_skinny(tmp_path):
    """1x1 @ 1x1 and a 300x1 @ 1x2 outer product: exact within the bound."""
    for A, B in ((np.array([[3.0]]), np.array([[-7.0]])),
                 (np.linspace(-1, 1, 300)[:, None], np.array([[1e-3, 5.0]]))):
        a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
        out = str(tmp_path / f"C{A.shape[0]}.h5")
        assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", n=2))
        _final_bound_covers(out, A, B)


def test_operand_replaced_between_stop_and_resume(tmp_path, ops, rng):
    """B.npy replaced (same name, same shape, other values) after a stop: --resume refuses
    with one line; the stopped checkpoint stays as it was."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "2")
    assert rc == 3, err
    save(tmp_path / "B.npy", rng.standard_normal((24, 16)))
    assert_one_error(run("matmul", a, b, "-o", out, "--planes", "2", "--resume"), codes=(1, 2))
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "deadline"


def test_operand_rewritten_identical_resumes(tmp_path, ops):
    """B.npy rewritten with the same values in another layout (Fortran order, a new inode and
    mtime) after a stop: --resume continues (inputs are compared by their values)."""
    a, b, _, B = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "2")
    assert rc == 3, err
    os.remove(b)
    save(b, np.asfortranarray(B))
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--resume"))
    assert_ok(run("matmul", a, b, "-o", tmp_path / "ref.h5", "--planes", "2"))
    assert np.array_equal(load(out)[0], load(tmp_path / "ref.h5")[0])


def test_float16_extremes_and_negative_zero(tmp_path):
    """float16 operands with 65504, the smallest subnormal and -0.0: the bound covers the
    exact product of their values."""
    A = np.array([[65504, -6e-8, -0.0], [1, 2, 3]], dtype=np.float16)
    B = np.array([[1, -1], [65504, 2], [0.5, -0.0]], dtype=np.float16)
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "4"))
    _final_bound_covers(out, A.astype(np.float64), B.astype(np.float64))
