"""Fifth adversarial pass, area 2: CRT / --write ranks / --keep / mixed resumes — `pack`
and `inspect` of `--keep latest` and `--write ranks` results (complete and stopped), a
checkpoint of an lrmpi from before checksums resumed, CRT integers exact through ranks
writing and `pack`."""
import glob
import os

import h5py
import numpy as np

from adversary import (assert_ok, assert_one_error, attrs_of, job_folder, load, run, save,
                      stop_after)


def plain_last_c(path):
    with h5py.File(path, "r") as f:
        last = f["resolutions"][f"{f.attrs['completed']:03d}"]
        return last["C"][()], last.attrs["bound_abs"]


def test_pack_and_inspect_of_complete_keep_latest(tmp_path, ops):
    """`--keep latest` complete: `inspect` shows one verified resolution, `pack` writes one
    file that plain h5py reads (`completed` indexes the one kept), equal to load_result."""
    a, b, A, B = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--keep", "latest"))
    r = run("inspect", out)
    assert r.returncode == 0 and "verified" in r.stdout, r.stdout + r.stderr
    assert_ok(run("pack", out, tmp_path / "P.h5"))
    C, bound = plain_last_c(tmp_path / "P.h5")
    assert np.array_equal(C, load(out)[0])
    assert np.abs(C - A @ B).max() <= bound


def test_pack_and_inspect_of_ranks_written_result_three_ranks(tmp_path, ops):
    """`--write ranks` under `mpiexec -n 3`: `inspect` checks every rank file (verified),
    `pack`'s one file holds a plain (not virtual) C equal to load_result's, readable after
    the original folder is deleted."""
    a, b, A, B = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--write", "ranks", n=3))
    assert glob.glob(str(tmp_path / "C.h5.d" / "*" / "rank*-res*.h5"))
    r = run("inspect", out)
    assert r.returncode == 0 and "verified" in r.stdout and "unchecked" not in r.stdout, r.stdout
    assert_ok(run("pack", out, tmp_path / "P.h5"))
    ref = load(out)[0]
    import shutil
    shutil.rmtree(tmp_path / "C.h5.d")
    with h5py.File(tmp_path / "P.h5", "r") as f:
        for k in f["resolutions"]:
            assert not f["resolutions"][k]["C"].is_virtual
    assert np.array_equal(plain_last_c(tmp_path / "P.h5")[0], ref)


def test_pack_of_stopped_keep_latest_ranks_job_then_resume(tmp_path, ops):
    """`--keep latest --write ranks` stopped after resolution 1: `pack` writes its one kept
    resolution; `--resume` completes it; the packed copy is unchanged by that."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3", "--keep", "latest",
                         "--write", "ranks", n=3)
    assert rc == 3, err
    assert_ok(run("pack", out, tmp_path / "P.h5"))
    with h5py.File(tmp_path / "P.h5", "r") as f:
        packed = {k: f["resolutions"][k]["C"][()] for k in f["resolutions"]}
        assert f.attrs["status"] == "deadline"
    assert len(packed) == 1
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--keep", "latest", "--write",
                  "ranks", "--resume", n=2))
    assert attrs_of(out)["status"] == "complete"
    with h5py.File(tmp_path / "P.h5", "r") as f:
        assert {k: f["resolutions"][k]["C"][()] for k in f["resolutions"]}.keys() == packed.keys()
    C, attrs = load(out)
    assert np.abs(C - A @ B).max() <= attrs["bound_abs"]


def strip_checksums(out):
    """Make a checkpoint look written before checksums: no `checksum` attribute anywhere,
    no `checksums_from` on the job file."""
    files = [str(out)] + sorted(glob.glob(os.path.join(job_folder(out), "*.h5")))
    for path in files:
        with h5py.File(path, "r+") as f:
            for key in ("checksum", "checksums_from"):
                if key in f.attrs:
                    del f.attrs[key]
            def visit(_, obj):
                if "checksum" in obj.attrs:
                    del obj.attrs["checksum"]
            f.visititems(visit)


def test_pre_checksum_checkpoint_reads_unchecked_and_resumes(tmp_path, ops):
    """A stopped checkpoint as an lrmpi before checksums wrote it (no checksum attributes):
    `inspect` marks its resolutions unchecked, load_result reads it, `--resume` completes
    it to the uninterrupted result bit for bit."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3")
    assert rc == 3, err
    strip_checksums(out)
    r = run("inspect", out)
    assert r.returncode == 0 and "unchecked" in r.stdout, r.stdout + r.stderr
    load(out)
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--resume"))
    assert_ok(run("matmul", a, b, "-o", tmp_path / "R.h5", "--planes", "3"))
    assert np.array_equal(load(out)[0], load(tmp_path / "R.h5")[0])


def test_crt_integers_exact_ranks_writing_three_ranks_through_pack(tmp_path, rng):
    """Small integer matrices, `--final crt --moduli 16 --write ranks` under `mpiexec -n 3`:
    the CRT resolution is the exact integer product, also in `pack`'s one file."""
    A = rng.integers(-1000, 1000, (37, 29)).astype(np.float64)
    B = rng.integers(-1000, 1000, (29, 23)).astype(np.float64)
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--final", "crt", "--moduli", "16",
                  "--write", "ranks", n=3))
    exact = (A.astype(np.int64) @ B.astype(np.int64)).astype(np.float64)
    assert np.array_equal(load(out)[0], exact)
    assert_ok(run("pack", out, tmp_path / "P.h5"))
    assert np.array_equal(plain_last_c(tmp_path / "P.h5")[0], exact)


def test_resume_of_keep_latest_with_keep_all_spelled_explicitly(tmp_path, ops):
    """A `--keep latest` job stopped, resumed with `--keep all`: refused with one line (the
    README: a `--keep` other than the resumed checkpoint's), the checkpoint unchanged and
    still resumable as it began."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3", "--keep", "latest")
    assert rc == 3, err
    before = attrs_of(out)
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--keep", "all", "--resume")
    assert_one_error(r, code=2, contains=("keep",))
    assert attrs_of(out)["completed"] == before["completed"]
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--keep", "latest", "--resume"))
