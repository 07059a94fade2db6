"""Eighth adversarial pass, area 3: damaged and hostile checkpoints and cache entries — the
imported graph kept as a float64 .npy (mapped read-only; ranks on rank 0's host map it
themselves) changed in place, replaced, truncated or deleted during a job once rank 0 has
mapped it, and between jobs (another model's .npy, a folder, a FIFO, /dev/zero, read-only);
an inference checkpoint with another job's or another resolution's file in a resolution's
place. docs/design.md: a damaged cache entry reads as absent, results never depend on what
the cache held, the .npy's digest is compared on every read; the README: readers refuse
another job's or another resolution's file with one line."""
import os
import shutil

import h5py
import pytest

from adversary import (assert_ok, assert_one_error, job_folder, load_in_child, run,
                       run_nocap, bounded)
from adversary6 import assert_same
from adversary8 import (gmodels, ginfer, graph_npy, gstart, root_mapped_then,  # noqa: F401
                        warm)

SLOW_PREP = {"LRMPI_TEST_SLOW_PREPARE_S": "1.2"}
NPY_BYTE = 205          # inside the first large weight: a low byte of one float64


def flip_in_place(path, keep_mtime=True):
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(NPY_BYTE)
        b = f.read(1)
        f.seek(NPY_BYTE)
        f.write(bytes([b[0] ^ 0x10]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def replace_changed(path):
    """A new file (new inode) under the name, one byte changed."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[NPY_BYTE] ^= 0x10
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(bytes(data))


def during(tmp_path, gm, action, rank=0):
    m1, _, data, seed, ref1 = gm
    cache = warm(seed, tmp_path / "c")
    npy = graph_npy(cache)
    out = tmp_path / "o.h5"
    p = gstart(m1, data, out, cache, env=SLOW_PREP)
    code, err = root_mapped_then(p, npy, lambda: action(npy), rank=rank)
    return code, err, out, ref1


def test_graph_npy_changed_in_place_during_a_job(tmp_path, gmodels):
    """One byte of the cached graph's .npy changed in place (mtime kept) once rank 0 mapped
    it, `mpiexec -n 3`: the job's scores equal the no-cache reference (or one line)."""
    code, err, out, ref1 = during(tmp_path, gmodels, flip_in_place)
    assert "Traceback" not in err and "BAD TERMINATION" not in err, err
    if code == 0:
        assert_same(out, ref1)
    else:
        assert code == 1 and len([x for x in err.splitlines() if "lrmpi: error" in x]) == 1, err


def test_graph_npy_truncated_during_a_job(tmp_path, gmodels):
    """The cached graph's .npy truncated by 4 kB once rank 0 mapped it. design.md: lrmpi
    never truncates an entry; a truncation under a running job faults the ranks that
    read the file (SIGBUS), as a kill would (the pass found the bus error; the promise
    is the kill's): the job ends, nothing is lost, and --resume (the entry now reads as
    absent: imported again) completes equal to the reference."""
    m1, _, data, seed, ref1 = gmodels
    code, err, out, _ = during(tmp_path, gmodels,
                               lambda p: os.truncate(p, os.path.getsize(p) - 4096))
    assert code != 0 or "Bus error" not in err
    if code != 0:
        assert_ok(ginfer(m1, data, out, tmp_path / "c", "--resume", n=3))
    assert_same(out, ref1)


def test_graph_npy_replaced_during_a_job(tmp_path, gmodels):
    """A new file (new inode, one byte changed) under the .npy's name once rank 0 mapped
    it: the workers receive the weights instead of mapping it; equal to the reference."""
    code, err, out, ref1 = during(tmp_path, gmodels, replace_changed)
    assert code == 0, err
    assert_same(out, ref1)


def test_graph_npy_deleted_during_a_job(tmp_path, gmodels):
    """The .npy deleted once rank 0 mapped it: complete, equal to the reference."""
    code, err, out, ref1 = during(tmp_path, gmodels, os.unlink)
    assert code == 0, err
    assert_same(out, ref1)


def test_graph_npy_changed_between_jobs_three_ranks(tmp_path, gmodels):
    """One byte of the .npy changed between jobs, mtime kept: the digest catches it; the
    3-rank job equals the reference."""
    m1, _, data, seed, ref1 = gmodels
    cache = warm(seed, tmp_path / "c")
    flip_in_place(graph_npy(cache))
    out = tmp_path / "o.h5"
    assert_ok(ginfer(m1, data, out, cache, n=3))
    assert_same(out, ref1)


def test_graph_npy_of_the_other_model_under_the_name(tmp_path, gmodels):
    """The other model's .npy (same architecture, same size) put under the first model's
    .npy name, the .npz kept: equal to the first model's reference at 2 ranks."""
    m1, m2, data, seed, ref1 = gmodels
    cache = warm(seed, tmp_path / "c")
    c2 = tmp_path / "c2"
    assert_ok(ginfer(m2, data, tmp_path / "two.h5", c2))
    npy1, npy2 = graph_npy(cache), graph_npy(c2)
    assert os.path.getsize(npy1) == os.path.getsize(npy2)
    shutil.copyfile(npy2, npy1)
    out = tmp_path / "o.h5"
    assert_ok(ginfer(m1, data, out, cache, n=2))
    assert_same(out, ref1)


@pytest.mark.parametrize("what", ["folder", "fifo", "devzero"])
def test_graph_npy_replaced_by_a_special_thing(tmp_path, gmodels, what):
    """The .npy is a folder (with a file in it), a FIFO, a link to /dev/zero: the job never
    hangs, completes equal to the reference, and the thing is left as it was."""
    m1, _, data, seed, ref1 = gmodels
    cache = warm(seed, tmp_path / "c")
    npy = graph_npy(cache)
    os.unlink(npy)
    if what == "folder":
        os.mkdir(npy)
        with open(os.path.join(npy, "mine.txt"), "w") as f:
            f.write("x")
    elif what == "fifo":
        os.mkfifo(npy)
    else:
        os.symlink("/dev/zero", npy)
    out = tmp_path / "o.h5"
    res = bounded("infer", m1, data, "-o", out, "--planes", "3", "--rule", "none",
                  env={"LRMPI_CACHE_DIR": str(cache)}, limit=40)
    assert_ok(res)
    assert_same(out, ref1)
    if what == "folder":
        with open(os.path.join(npy, "mine.txt")) as f:
            assert f.read() == "x"
    elif what == "fifo":
        import stat
        assert stat.S_ISFIFO(os.lstat(npy).st_mode)
    else:
        assert os.readlink(npy) == "/dev/zero"


def test_graph_npy_damaged_in_a_read_only_cache(tmp_path, gmodels):
    """A changed .npy in a cache folder the user cannot write (no root override): the job
    completes equal to the reference (the entry read as absent, not stored again)."""
    m1, _, data, seed, ref1 = gmodels
    cache = warm(seed, tmp_path / "c")
    npy = graph_npy(cache)
    flip_in_place(npy)
    for p in [npy, *[os.path.join(cache, x) for x in os.listdir(cache)]]:
        os.chmod(p, 0o444)
    os.chmod(cache, 0o555)
    out = tmp_path / "o.h5"
    try:
        res = run_nocap("infer", m1, data, "-o", out, "--planes", "3", "--rule", "none",
                        env={"LRMPI_CACHE_DIR": str(cache)})
    finally:
        os.chmod(cache, 0o755)
    assert_ok(res)
    assert_same(out, ref1)


@pytest.fixture
def two_infer(tmp_path, gmodels):
    """Two complete infer checkpoints of one architecture: (out1, out2)."""
    m1, m2, data, _, _ = gmodels
    o1, o2 = tmp_path / "s1.h5", tmp_path / "s2.h5"
    assert_ok(ginfer(m1, data, o1, ""))
    assert_ok(ginfer(m2, data, o2, ""))
    return o1, o2


def test_infer_resolution_of_another_job_in_place(two_infer):
    """res002.h5 of another inference job (same shapes) copied over this job's: inspect
    and load_result fail with one line naming it."""
    o1, o2 = two_infer
    shutil.copyfile(os.path.join(job_folder(o2), "res002.h5"),
                    os.path.join(job_folder(o1), "res002.h5"))
    assert_one_error(run("inspect", o1), code=1)
    code, _, err = load_in_child(o1)
    assert code == 1 and "ERR" in err, err


def test_infer_resolution_link_made_an_alias_of_another(two_infer):
    """/resolutions/002 of an inference job file relinked to res003.h5 of the same job:
    inspect and --resume fail with one line; load_result never returns res003 as 002."""
    o1, _ = two_infer
    jf = os.path.basename(job_folder(o1))
    with h5py.File(o1, "r+") as f:
        del f["resolutions"]["002"]
        f["resolutions"]["002"] = h5py.ExternalLink(f"{o1.name}.d/{jf}/res003.h5", "/")
    assert_one_error(run("inspect", o1), code=1)
