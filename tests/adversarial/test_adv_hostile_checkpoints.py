"""Area 3: damaged and hostile checkpoints — edited, swapped, truncated, replaced files.

Every reader (load_result, inspect, pack, --resume) either returns the job's own data or
fails with one line; nothing is read from outside the checkpoint's folder.
"""
import os
import shutil

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, job_folder, load, load_in_child, run,
                      snapshot, stop_after, swap)


_job = job_folder


def readers_refuse(out, a, b, planes="2", extra=()):
    """inspect, pack and --resume each fail with one line; load_result raises LrmpiError."""
    assert_one_error(run("inspect", out), code=1)
    packed = str(out) + ".packed.h5"
    assert_one_error(run("pack", out, packed), code=1)
    assert not os.path.exists(packed)
    assert_one_error(run("matmul", a, b, "-o", out, "--planes", planes, "--resume", *extra),
                     codes=(1, 2))
    rc, C, err = load_in_child(out)
    assert rc == 1 and "Traceback" not in err, err


def test_resolution_files_swapped_within_job(done):
    """res002.h5 and res003.h5 of the same job swapped (same job id, valid checksums): the
    readers must not present resolution 2's C as resolution 3's."""
    out, a, b, A, B = done
    job = _job(out)
    C3 = load(out)[0]
    swap(os.path.join(job, "res002.h5"), os.path.join(job, "res003.h5"))
    rc, C, err = load_in_child(out)
    assert rc == 1 or np.array_equal(C, C3), "resolution 2's C returned as the result"
    if rc == 1:
        assert_one_error(run("inspect", out), code=1)


def test_completed_attr_beyond_listed(done):
    """The job file's `completed` edited to 99: one line from every reader."""
    out, a, b, _, _ = done
    with h5py.File(out, "r+") as f:
        f.attrs["completed"] = 99
    readers_refuse(out, a, b)


def test_planned_negative(done):
    out, a, b, _, _ = done
    with h5py.File(out, "r+") as f:
        f.attrs["planned"] = -3
    readers_refuse(out, a, b)


def test_format_version_from_the_future(done):
    out, a, b, _, _ = done
    with h5py.File(out, "r+") as f:
        f.attrs["format_version"] = 2
    for r in (run("inspect", out), run("pack", out, out + ".p.h5")):
        assert_one_error(r, code=1, contains=("version",))
    assert load_in_child(out)[0] == 1


def test_kind_edited_to_infer(done):
    """A matmul checkpoint whose `kind` says infer: one line, never a traceback."""
    out, a, b, _, _ = done
    with h5py.File(out, "r+") as f:
        f.attrs["kind"] = "infer"
    readers_refuse(out, a, b)


def test_link_to_absolute_path_of_a_copy(done, tmp_path):
    """/resolutions/003 re-linked to an absolute path of a byte-identical copy outside the
    folder (same job id, valid checksum): not read from outside the folder."""
    out, a, b, _, _ = done
    job = _job(out)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(os.path.join(job, "res003.h5"), outside / "res003.h5")
    with h5py.File(outside / "res003.h5", "r+") as f:      # a different C, same identity
        f["C"][0, 0] = 12345.0
    with h5py.File(out, "r+") as f:
        del f["resolutions/003"]
        f["resolutions/003"] = h5py.ExternalLink(str(outside / "res003.h5"), "/")
    rc, C, err = load_in_child(out)
    assert rc == 1 or C[0, 0] != 12345.0, "read a file outside the checkpoint's folder"


def test_resolution_file_replaced_by_folder(done):
    out, a, b, _, _ = done
    job = _job(out)
    os.remove(os.path.join(job, "res003.h5"))
    os.mkdir(os.path.join(job, "res003.h5"))
    readers_refuse(out, a, b)
    assert os.path.isdir(os.path.join(job, "res003.h5"))


def test_resolution_file_symlink_to_dev_zero(done):
    """res003.h5 replaced by a link to /dev/zero: one line from each reader, promptly."""
    out, a, b, _, _ = done
    job = _job(out)
    os.remove(os.path.join(job, "res003.h5"))
    os.symlink("/dev/zero", os.path.join(job, "res003.h5"))
    readers_refuse(out, a, b)
    assert os.path.islink(os.path.join(job, "res003.h5"))


def test_job_file_is_a_fifo(tmp_path):
    """inspect of a named pipe: one line within the probe limit, never a hang."""
    fifo = tmp_path / "C.h5"
    os.mkfifo(fifo)
    r = run("inspect", fifo, env={"LRMPI_PROBE_TIMEOUT_S": "3"}, timeout=40)
    assert_one_error(r, code=1)


def test_job_file_truncated_to_header(done):
    """The job file cut to its first 1 KiB: one line; --overwrite still replaces it? no —
    lrmpi cannot prove it wrote it, so --overwrite is refused too (or succeeds leaving the
    old folder's files in place)."""
    out, a, b, _, _ = done
    before = snapshot(out + ".d")
    with open(out, "r+b") as f:
        f.truncate(1024)
    readers_refuse(out, a, b)
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite")
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
    after = snapshot(out + ".d")
    for k, v in before.items():
        if v[0] == "file" and k != ".lock":
            assert after.get(k) == v, k


def test_sums_deleted_then_resume_of_stopped_job(tmp_path, ops):
    """A stopped job whose resume data (sums) was deleted: --resume gives one line or
    completes with the uninterrupted result — never a different C."""
    a, b, _, _ = ops
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "3"))
    out = str(tmp_path / "C.h5")
    stop_after(out, 2, "matmul", a, b, "-o", out, "--planes", "3")
    job = _job(out)
    sums = [x for x in os.listdir(job) if x.startswith("sums")]
    assert sums
    for x in sums:
        os.remove(os.path.join(job, x))
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--resume")
    if r.returncode == 0:
        assert np.array_equal(load(out)[0], load(ref)[0])
    else:
        assert_one_error(r, code=1)


def test_rank_files_of_two_ranks_swapped(tmp_path, ops):
    """--write ranks at -n 3: rank 1's and rank 2's files of resolution 1 swapped: the
    readers refuse, or C equals the original (never tiles in the wrong place)."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--write", "ranks", n=3,
                  env={"LRMPI_MIN_TILE_ROWS": "8", "LRMPI_ROOT_COMPUTES": "no"}))
    C0 = load(out)[0]
    job = _job(out)
    r1, r2 = os.path.join(job, "rank0001-res001.h5"), os.path.join(job, "rank0002-res001.h5")
    if not (os.path.exists(r1) and os.path.exists(r2)):
        pytest.skip(f"not two rank files: {os.listdir(job)}")
    swap(r1, r2)
    rc, C, err = load_in_child(out)
    assert rc == 1 or np.array_equal(C, C0), "tiles of another rank read in place"
    if rc == 1:
        assert_one_error(run("inspect", out), code=1)
        assert_one_error(run("pack", out, out + ".p.h5"), code=1)


def test_job_id_attr_with_nul_and_huge(done):
    """job_id edited to a 10 000-character string or one with a NUL-like escape: one line."""
    out, a, b, _, _ = done
    for bad in ("x" * 10000, "a\x01b", "", ".", "..", "/"):
        with h5py.File(out, "r+") as f:
            f.attrs["job_id"] = bad
        assert_one_error(run("inspect", out), code=1)
        assert load_in_child(out)[0] == 1
