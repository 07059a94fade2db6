"""Seventh adversarial pass, area 3: damaged and hostile checkpoints and cache entries —
cache entries truncated, emptied, made dangling links, a read-only cache folder, a cache
folder that is a link, two jobs filling one cache at once; a rank file of one resolution
copied over another's, a member added to a resolution file, resume data of two
resolutions swapped, a job file whose `resolutions` is not a group. The README and
docs/design.md: a damaged cache entry reads as absent and results never depend on what the
cache held; readers refuse another resolution's file and fail with one line on damage."""
import glob
import os
import shutil

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, attrs_of, job_folder, load,
                       load_in_child, run, run_nocap, start, stop_after, swap)
from adversary6 import assert_same, cache_env, entries, infer
from adversary7 import PACK_ARGS, PACK_ENV, pinfer


@pytest.mark.parametrize("kind", ["graph", "norms3"])
def test_cache_entry_truncated_reads_as_absent(tmp_path, tiny, kind):
    """A graph / norms entry cut to half its size: the next run completes and equals the
    no-cache reference bit for bit."""
    m1, _, data, ref1 = tiny
    cache = tmp_path / "c"
    assert_ok(infer(m1, data, tmp_path / "a.h5", cache=cache))
    for p in entries(cache, kind):
        size = os.path.getsize(p)
        with open(p, "r+b") as f:
            f.truncate(size // 2)
    out = tmp_path / "b.h5"
    assert_ok(infer(m1, data, out, cache=cache))
    assert_same(out, ref1)


def test_cache_entries_emptied_to_zero_bytes(tmp_path, tiny):
    """Every entry emptied (0 bytes): the run completes, bit-identical to the reference."""
    m1, _, data, ref1 = tiny
    cache = tmp_path / "c"
    assert_ok(infer(m1, data, tmp_path / "a.h5", cache=cache))
    for p in glob.glob(str(cache / "*")):
        open(p, "w").close()
    out = tmp_path / "b.h5"
    assert_ok(infer(m1, data, out, cache=cache))
    assert_same(out, ref1)


def test_cache_entry_dangling_link_creates_nothing_outside(tmp_path, tiny):
    """Each entry replaced by a dangling symbolic link to a path outside the cache: the run
    completes and equals the reference, and nothing is created at the links' targets."""
    m1, _, data, ref1 = tiny
    cache = tmp_path / "c"
    assert_ok(infer(m1, data, tmp_path / "a.h5", cache=cache))
    outside = tmp_path / "outside"
    outside.mkdir()
    for i, p in enumerate(glob.glob(str(cache / "*"))):
        os.remove(p)
        os.symlink(outside / f"t{i}", p)
    out = tmp_path / "b.h5"
    assert_ok(infer(m1, data, out, cache=cache))
    assert_same(out, ref1)
    assert os.listdir(outside) == []


def test_read_only_cache_folder_job_completes(tmp_path, tiny):
    """The cache folder read-only (mode 555, a process without root's override): the job
    still completes (the cache is kept work, not needed), results equal the reference."""
    m1, _, data, ref1 = tiny
    cache = tmp_path / "c"
    cache.mkdir()
    cache.chmod(0o555)
    out = tmp_path / "b.h5"
    try:
        r = run_nocap("infer", m1, data, "-o", out, "--planes", "3", "--rule", "none",
                      env=cache_env(cache))
    finally:
        cache.chmod(0o755)
    assert_ok(r)
    assert_same(out, ref1)


def test_cache_folder_that_is_a_link_to_a_folder(tmp_path, tiny):
    """LRMPI_CACHE_DIR a symbolic link to a real folder: entries land in the folder, the
    link stays a link, a second run (from the cache) equals the reference."""
    m1, _, data, ref1 = tiny
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    os.symlink(real, link)
    assert_ok(infer(m1, data, tmp_path / "a.h5", cache=link))
    assert os.path.islink(link) and entries(real, "graph")
    out = tmp_path / "b.h5"
    assert_ok(infer(m1, data, out, cache=link))
    assert_same(out, ref1)


def test_two_jobs_fill_one_cache_at_once(tmp_path, tiny):
    """Two jobs (one at 2 ranks) started at once on a fresh shared cache, two outputs:
    both complete, both equal the reference; then the cache serves a third identically."""
    m1, _, data, ref1 = tiny
    cache = tmp_path / "c"
    env = {**cache_env(cache)}
    outs = [tmp_path / "x.h5", tmp_path / "y.h5"]
    ps = [start("infer", m1, data, "-o", outs[0], "--planes", "3", "--rule", "none", env=env),
          start("infer", m1, data, "-o", outs[1], "--planes", "3", "--rule", "none", env=env,
                n=2)]
    for p in ps:
        o, e = p.communicate(timeout=90)
        assert p.returncode == 0, e
        assert "Traceback" not in e
    for o in outs:
        assert_same(o, ref1)
    out = tmp_path / "z.h5"
    assert_ok(infer(m1, data, out, cache=cache))
    assert_same(out, ref1)
    assert not [p for p in os.listdir(cache) if ".tmp" in p]


def test_rank_file_of_resolution_1_copied_over_resolution_3(tmp_path, ops):
    """`--write ranks` at 2 ranks; rank0001-res001.h5 copied over rank0001-res003.h5 (same
    job, same rank, intact checksums): `load_result` and `inspect` fail with one line,
    never returning resolution 1's numbers as resolution 3's."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--write", "ranks", n=2))
    jf = job_folder(out)
    shutil.copyfile(os.path.join(jf, "rank0001-res001.h5"), os.path.join(jf, "rank0001-res003.h5"))
    rc, C, err = load_in_child(out)
    assert rc == 1 and C is None, err
    assert_one_error(run("inspect", out), code=1)
    assert_one_error(run("pack", out, tmp_path / "P.h5"), code=1)
    assert not os.path.exists(tmp_path / "P.h5")


def test_member_added_to_resolution_file(tmp_path, done):
    """A dataset `extra` added to the last resolution file (its root checksum covers its
    members): `load_result`, `inspect` and `--resume` fail with one line naming the file."""
    out, a, b, A, B = done
    last = os.path.join(job_folder(out), "res003.h5")
    with h5py.File(last, "r+") as f:
        f["extra"] = np.zeros(3)
    rc, C, err = load_in_child(out)
    assert rc == 1, err
    assert_one_error(run("inspect", out), code=1, contains=("res003",))
    assert_one_error(run("matmul", a, b, "-o", out, "--planes", "2", "--resume"), code=1)


def test_resume_data_of_two_resolutions_swapped(tmp_path, ops):
    """A matmul stopped after resolution 3 of 7; sums002.h5 and sums003.h5 swapped: the
    `--resume` fails with one line, or completes bit-identical to an uninterrupted run
    (never adds the wrong sums)."""
    a, b, A, B = ops
    ref = str(tmp_path / "ref.h5")
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "4"))
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 3, "matmul", a, b, "-o", out, "--planes", "4", slow="0.3")
    assert rc == 3, err
    jf = job_folder(out)
    swap(os.path.join(jf, "sums002.h5"), os.path.join(jf, "sums003.h5"))
    r = run("matmul", a, b, "-o", out, "--planes", "4", "--resume")
    if r.returncode == 0:
        assert np.array_equal(load(out)[0], load(ref)[0])
    else:
        assert_one_error(r, code=1)


def test_resolutions_group_replaced_by_a_dataset(tmp_path, done):
    """The job file's `/resolutions` replaced by a dataset: `load_result`, `inspect`,
    `pack` and `--resume` each one line (exit 1), no traceback."""
    out, a, b, A, B = done
    with h5py.File(out, "r+") as f:
        del f["resolutions"]
        f["resolutions"] = np.arange(3)
    rc, C, err = load_in_child(out)
    assert rc == 1 and "Traceback" not in err, err
    assert_one_error(run("inspect", out), code=1)
    assert_one_error(run("pack", out, tmp_path / "P.h5"), code=1)
    assert_one_error(run("matmul", a, b, "-o", out, "--planes", "2", "--resume"), code=1)


def test_job_file_truncated_by_one_byte_overwrite_leaves_it(tmp_path, done):
    """The job file lost its last byte: `inspect` one line; `--overwrite` with the same
    inputs writes a new complete result (or refuses with one line), and the old job's
    resolution files are not deleted (nothing proves them lrmpi's)."""
    out, a, b, A, B = done
    old = job_folder(out)
    files = sorted(os.listdir(old))
    with open(out, "r+b") as f:
        f.truncate(os.path.getsize(out) - 1)
    assert_one_error(run("inspect", out), code=1)
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite")
    if r.returncode == 0:
        assert attrs_of(out)["status"] == "complete"
    else:
        assert_one_error(r, codes=(1, 2))
    assert sorted(os.listdir(old)) == files


# ---- packed kernel weights (>= 16 MB packed): adversary7.py's packed2 fixture ----


def test_packed_weights_of_another_model_under_the_name(tmp_path, packed2):
    """Model 2's packed .npy (same size) copied over model 1's: the run of model 1 equals
    its no-cache reference bit for bit (the digest refuses the bytes)."""
    m1, m2, data, c1, c2, ref1 = packed2
    cache = tmp_path / "c"
    shutil.copytree(c1, cache)
    mine = [p for p in entries(cache, "packed") if p.endswith(".npy")][0]
    other = [p for p in entries(c2, "packed") if p.endswith(".npy")][0]
    assert os.path.getsize(mine) == os.path.getsize(other)
    shutil.copyfile(other, mine)
    out = tmp_path / "o.h5"
    assert_ok(pinfer(m1, data, out, cache))
    assert_same(out, ref1)


def test_packed_index_and_weights_both_swapped_between_models(tmp_path, packed2):
    """Model 2's packed .npy and .npz both put under model 1's names (a consistent pair of
    the wrong model): model 1's run equals its reference (the key is checked)."""
    m1, m2, data, c1, c2, ref1 = packed2
    cache = tmp_path / "c"
    shutil.copytree(c1, cache)
    for ext in (".npy", ".npz"):
        mine = [p for p in entries(cache, "packed") if p.endswith(ext)][0]
        other = [p for p in entries(c2, "packed") if p.endswith(ext)][0]
        shutil.copyfile(other, mine)
    out = tmp_path / "o.h5"
    assert_ok(pinfer(m1, data, out, cache, n=2))
    assert_same(out, ref1)


def test_packed_weights_shared_by_two_isas_and_two_jobs_at_once(tmp_path, packed2):
    """Two jobs at once on one fresh cache, one with `LRMPI_KERNEL=avx512` at 2 ranks, one
    with the default ISA: both equal the no-cache reference bit for bit."""
    m1, m2, data, c1, c2, ref1 = packed2
    cache = tmp_path / "c"
    env = {**PACK_ENV, **cache_env(cache)}
    outs = [tmp_path / "x.h5", tmp_path / "y.h5"]
    ps = [start("infer", m1, data, "-o", outs[0], *PACK_ARGS, n=2,
                env={**env, "LRMPI_KERNEL": "avx512"}),
          start("infer", m1, data, "-o", outs[1], *PACK_ARGS, env=env)]
    for p in ps:
        _, e = p.communicate(timeout=120)
        assert p.returncode == 0 and "Traceback" not in e, e
    for o in outs:
        assert_same(o, ref1)
