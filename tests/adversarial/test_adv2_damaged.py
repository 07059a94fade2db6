"""Second adversarial pass, area 3: damaged and hostile checkpoints — crafted links, virtual
datasets, huge declared shapes, stripped checksums, truncated resume data, odd lock files."""
import os
import shutil
import time

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, job_folder, load_in_child, run, snapshot,
                      stop_after)


_job = job_folder


def readers_refuse(out):
    """inspect and pack fail with one line (pack writes nothing); load_result raises."""
    assert_one_error(run("inspect", out, timeout=60), code=1)
    packed = str(out) + ".packed.h5"
    assert_one_error(run("pack", out, packed, timeout=60), code=1)
    assert not os.path.exists(packed)
    rc, C, err = load_in_child(out)
    assert rc == 1 and "Traceback" not in err, err


def test_dataset_c_deleted_from_last_resolution(done):
    """res003.h5 without its `C`: one line from every reader."""
    out = done[0]
    with h5py.File(os.path.join(_job(out), "res003.h5"), "r+") as f:
        del f["C"]
    readers_refuse(out)


def test_link_replaced_by_real_group_with_forged_c(done):
    """/resolutions/003 replaced inside the job file by a real group holding zeros and the
    real file's attributes: never returned as the result."""
    out = done[0]
    with h5py.File(os.path.join(_job(out), "res003.h5"), "r") as f:
        attrs = dict(f.attrs)
        shape = f["C"].shape
        c_attrs = dict(f["C"].attrs)
    with h5py.File(out, "r+") as f:
        del f["resolutions/003"]
        g = f.create_group("resolutions/003")
        for k, v in attrs.items():
            g.attrs[k] = v
        g["C"] = np.zeros(shape)
        for k, v in c_attrs.items():
            g["C"].attrs[k] = v
    rc, C, err = load_in_child(out)
    assert rc == 1 or np.any(C != 0), "a forged in-file group was returned as the result"


def test_relative_link_escaping_the_folder(done, tmp_path):
    """/resolutions/003 re-linked to `C.h5.d/<job>/../../elsewhere/res003.h5` (a relative
    path that leaves the folder) holding an edited copy: not read."""
    out = done[0]
    job = _job(out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(os.path.join(job, "res003.h5"), elsewhere / "res003.h5")
    with h5py.File(elsewhere / "res003.h5", "r+") as f:
        f["C"][0, 0] = 777.0
    rel = os.path.join(os.path.relpath(job, tmp_path), "..", "..", "elsewhere", "res003.h5")
    with h5py.File(out, "r+") as f:
        del f["resolutions/003"]
        f["resolutions/003"] = h5py.ExternalLink(rel, "/")
    rc, C, err = load_in_child(out)
    assert rc == 1 or C[0, 0] != 777.0, "read a file outside the checkpoint's folder"


def test_soft_link_makes_resolution_1_alias_resolution_3(done):
    """/resolutions/001 made an in-file soft link to /resolutions/003: inspect and pack must
    not present resolution 3 as resolution 1 (one line each)."""
    out = done[0]
    with h5py.File(out, "r+") as f:
        del f["resolutions/001"]
        f["resolutions/001"] = h5py.SoftLink("/resolutions/003")
    assert_one_error(run("inspect", out), code=1)
    packed = out + ".packed.h5"
    assert_one_error(run("pack", out, packed), code=1)
    assert not os.path.exists(packed)


def test_huge_declared_shape_refused_promptly(done):
    """res003.h5 rewritten with a chunked `C` declared 10^7 x 10^7 (800 TB, no data) and the
    real attributes: every reader one line within seconds, no MemoryError."""
    out = done[0]
    path = os.path.join(_job(out), "res003.h5")
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
    os.remove(path)
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("C", shape=(10**7, 10**7), dtype="f8", chunks=(64, 64))
    t = time.monotonic()
    readers_refuse(out)
    assert time.monotonic() - t < 60


def test_c_made_a_virtual_dataset_over_the_previous_resolution(done):
    """Root-written res003.h5 whose C is turned into a virtual dataset over res002.h5's C
    (same folder, same job): resolution 2's numbers never come back as resolution 3's."""
    out = done[0]
    job = _job(out)
    path = os.path.join(job, "res003.h5")
    with h5py.File(path, "r") as f:
        attrs, c_attrs, shape = dict(f.attrs), dict(f["C"].attrs), f["C"].shape
    with h5py.File(os.path.join(job, "res002.h5"), "r") as f:
        C2 = f["C"][()]
    os.remove(path)
    layout = h5py.VirtualLayout(shape=shape, dtype="f8")
    layout[:] = h5py.VirtualSource("res002.h5", "C", shape=shape)
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_virtual_dataset("C", layout)
        for k, v in c_attrs.items():
            f["C"].attrs[k] = v
    rc, C, err = load_in_child(out)
    assert rc == 1 or not np.array_equal(C, C2), "resolution 2's C returned as the result"


def test_rank_file_replaced_by_symlink_to_other_ranks_file(tmp_path, ops):
    """--write ranks at -n 3: rank 2's file of the last resolution replaced by a symlink to
    rank 1's: one line from every reader."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--write", "ranks", n=3,
                  env={"LRMPI_ROOT_COMPUTES": "no", "LRMPI_MIN_TILE_ROWS": "8"}))
    job = _job(out)
    ranks = sorted(n for n in os.listdir(job) if n.startswith("rank") and "res001" in n)
    if len(ranks) < 2:
        pytest.skip(f"only {ranks} wrote tiles")
    os.remove(os.path.join(job, ranks[1]))
    os.symlink(ranks[0], os.path.join(job, ranks[1]))
    readers_refuse(out)


def test_sums_truncated_resume_one_line(tmp_path, ops):
    """A stopped job whose sums file of the last listed resolution is cut in half: --resume
    one line (never a different product), the truncated file left as it is."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 2, "matmul", a, b, "-o", out, "--planes", "2")
    assert rc == 3, err
    job = _job(out)
    sums = sorted(n for n in os.listdir(job) if n.startswith("sums"))
    assert sums, os.listdir(job)
    path = os.path.join(job, sums[-1])
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--resume")
    assert_one_error(r, code=1)
    assert os.path.getsize(path) == size // 2


def test_external_link_loop_no_hang(done):
    """/resolutions/001 an external link to C.h5:/resolutions/001 itself: one line, promptly."""
    out = done[0]
    with h5py.File(out, "r+") as f:
        del f["resolutions/001"]
        f["resolutions/001"] = h5py.ExternalLink(os.path.basename(out), "/resolutions/001")
    readers_refuse(out)


@pytest.mark.parametrize("job_id", ["", ".", "..", "a/b", "0123456789ABCDEF "])
def test_job_id_odd_values(done, job_id):
    """The job file's job_id edited to '', '.', '..', 'a/b' or with a trailing blank: one
    line from each reader, nothing outside read."""
    out = done[0]
    with h5py.File(out, "r+") as f:
        f.attrs["job_id"] = job_id
    readers_refuse(out)


def test_checksum_stripped_from_a_checked_resolution(done):
    """res003.h5's C `checksum` attribute deleted and its C changed: the job file says the
    files carry checksums from resolution 1 on, so this is damage, not an old file."""
    out = done[0]
    path = os.path.join(_job(out), "res003.h5")
    with h5py.File(path, "r+") as f:
        if "checksum" in f["C"].attrs:
            del f["C"].attrs["checksum"]
        if "checksum" in f.attrs:
            del f.attrs["checksum"]
        f["C"][0, 0] = 4242.0
    readers_refuse(out)


def test_bits_edited_in_stopped_job_resume_refused(tmp_path, ops):
    """A stopped job whose `bits` attribute was edited to 9: --resume one line, the resume
    data untouched."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "2")
    assert rc == 3, err
    with h5py.File(out, "r+") as f:
        f.attrs["bits"] = 9
    before = snapshot(out + ".d")
    assert_one_error(run("matmul", a, b, "-o", out, "--planes", "2", "--resume"), codes=(1, 2))
    assert snapshot(out + ".d") == before


# found by the second adversarial pass (fixed: one line, never a wait on the pipe)
def test_lock_replaced_by_fifo_no_hang(tmp_path, ops):
    """OUT.h5.d/.lock replaced by a named pipe (opening it for writing would block): a
    --resume ends within seconds, completing or with one line."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "2")
    assert rc == 3, err
    lock = out + ".d/.lock"
    if os.path.exists(lock):
        os.remove(lock)
    os.mkfifo(lock)
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--resume", timeout=60)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
    assert os.path.exists(lock)


def test_job_folder_replaced_by_file(done):
    """OUT.h5.d/<job_id> replaced by a regular file: one line from every reader, the file
    left in place."""
    out = done[0]
    job = _job(out)
    shutil.rmtree(job)
    with open(job, "w") as f:
        f.write("not a folder")
    readers_refuse(out)
    with open(job) as f:
        assert f.read() == "not a folder"
