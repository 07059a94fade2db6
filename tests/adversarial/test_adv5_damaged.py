"""Fifth adversarial pass, area 3: damaged and hostile checkpoints — C rewritten with its
checksum attribute kept (other dtype, transposed shape, compressed), a resolution file of
an identical job put in place, attributes edited, a member added to the resume data."""
import glob
import os
import shutil

import h5py
import numpy as np

from adversary import (assert_ok, assert_one_error, job_folder, load_in_child, run,
                      stop_after)


def rewrite_c(res, make):
    """Replace dataset C of resolution file `res` by make(C), keeping its attributes."""
    with h5py.File(res, "r+") as f:
        C = f["C"][()]
        at = dict(f["C"].attrs)
        del f["C"]
        make(f, C)
        for k, v in at.items():
            f["C"].attrs[k] = v


def readers_fail(out, a, b, tmp_path):
    rc, C, err = load_in_child(out)
    assert rc != 0 and C is None, err
    assert_one_error(run("inspect", out), code=1)
    assert_one_error(run("pack", out, tmp_path / "P.h5"), code=1)
    assert not (tmp_path / "P.h5").exists()


def test_c_rewritten_as_float32_with_checksum_kept(tmp_path, done):
    """C of the last resolution rewritten as float32 (values rounded), its checksum
    attribute copied: the checksum covers the dtype, so every reader fails with one line."""
    out, a, b, _, _ = done
    res = sorted(glob.glob(os.path.join(job_folder(out), "res*.h5")))[-1]
    rewrite_c(res, lambda f, C: f.create_dataset("C", data=C.astype(np.float32)))
    readers_fail(out, a, b, tmp_path)


def test_c_rewritten_transposed_same_bytes(tmp_path, done):
    """C of the last resolution rewritten with the same bytes in the transposed shape (16x40
    for 40x16), its checksum kept: an error, never a C of the wrong shape."""
    out, a, b, _, _ = done
    res = os.path.join(job_folder(out), "res003.h5")
    rewrite_c(res, lambda f, C: f.create_dataset("C", data=C.reshape(C.shape[::-1])))
    readers_fail(out, a, b, tmp_path)


def test_c_rewritten_compressed_same_values(tmp_path, done):
    """C rewritten chunked and gzip-compressed with identical values and checksum: the data
    is the same, so readers either accept it (and return the same C) or refuse with one
    line; never a different number."""
    out, a, b, _, _ = done
    rc0, C0, _ = load_in_child(out)
    assert rc0 == 0
    res = sorted(glob.glob(os.path.join(job_folder(out), "res*.h5")))[-1]
    rewrite_c(res, lambda f, C: f.create_dataset("C", data=C, chunks=(8, 8), compression="gzip"))
    rc, C, err = load_in_child(out)
    if rc == 0:
        assert np.array_equal(C, C0)
    else:
        assert "Traceback" not in err


def test_resolution_file_of_an_identical_job_put_in_place(tmp_path, ops):
    """Two runs of the same inputs and options; the last resolution of the second copied over
    the first's: the numbers are even identical, but the file is another job's (its job_id):
    refused by every reader with one line (the README: never another job's files)."""
    a, b, _, _ = ops
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    assert_ok(run("matmul", a, b, "-o", one, "--planes", "2"))
    assert_ok(run("matmul", a, b, "-o", two, "--planes", "2"))
    shutil.copyfile(os.path.join(job_folder(two), "res003.h5"),
                    os.path.join(job_folder(one), "res003.h5"))
    readers_fail(one, a, b, tmp_path)


def test_bound_attribute_edited_to_nan(tmp_path, done):
    """`bound_rel` of the last resolution edited to NaN (the file's root checksum covers its
    attributes): every reader fails with one line."""
    out, a, b, _, _ = done
    with h5py.File(os.path.join(job_folder(out), "res003.h5"), "r+") as f:
        f.attrs["bound_rel"] = np.nan
    readers_fail(out, a, b, tmp_path)


def test_member_added_to_resume_data_then_resume(tmp_path, ops):
    """A job stopped after resolution 2 whose `sums002.h5` got an extra dataset (its checksums intact
    otherwise): `--resume` fails with one line naming the file, or ignores the stranger
    and completes correctly; never a traceback."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 2, "matmul", a, b, "-o", out, "--planes", "3")
    assert rc == 3, err
    sums = sorted(glob.glob(os.path.join(job_folder(out), "sums*.h5")))
    assert sums
    with h5py.File(sums[0], "r+") as f:
        f["intruder"] = np.ones(3)
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--resume")
    if r.returncode != 0:
        assert_one_error(r, code=1, contains=(os.path.basename(sums[0]),))
    else:
        rc, C, e = load_in_child(out)
        assert rc == 0 and np.abs(C - A @ B).max() < 1e-3, e


def test_job_file_status_edited_to_complete_while_stopped(tmp_path, ops):
    """A stopped job's file edited to `status=complete`: the root checksum covers it, so
    `inspect` and `--resume` fail with one line (never "already complete")."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3")
    assert rc == 3, err
    with h5py.File(out, "r+") as f:
        f.attrs["status"] = "complete"
    assert_one_error(run("inspect", out), code=1)
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--resume")
    assert_one_error(r, code=1)
