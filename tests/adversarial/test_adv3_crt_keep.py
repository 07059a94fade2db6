"""Third adversarial pass, area 2: CRT, --write ranks, --keep and mixed resumes."""
import os

import numpy as np
import pytest

from adversary import assert_ok, assert_one_error, attrs_of, load, run, stop_after


def job_files(out):
    d = out + ".d"
    return sorted(f for _, _, fs in os.walk(d) for f in fs if f != ".lock")


def test_crt_keep_latest_ranks_writing_three_ranks_equals_plain(tmp_path, ops):
    """--final crt --keep latest --write ranks at -n 3: complete, the same C as a plain
    one-process run, only the last resolution listed and no resume data left."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--moduli", "6",
            "--keep", "latest", "--write", "ranks", n=3, timeout=120)
    assert r.returncode == 0, r.stderr
    ref = str(tmp_path / "R.h5")
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "2", "--final", "crt", "--moduli", "6"))
    C, at = load(out)
    R, _ = load(ref)
    assert np.array_equal(C, R)
    assert not any(f.startswith("sums") for f in job_files(out))


def test_resume_without_final_crt_refused(tmp_path, ops):
    """A --final crt job stopped after resolution 1, resumed without --final crt: refused
    with one line (options differ), the checkpoint unchanged."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3", "--final", "crt",
                         "--moduli", "4")
    assert rc == 3, err
    before = attrs_of(out)
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--resume")
    assert_one_error(r, codes=(1, 2))
    assert attrs_of(out)["completed"] == before["completed"]


def test_resume_switching_write_mode_bit_identical_or_refused(tmp_path, ops):
    """Stopped with --write ranks at -n 2, resumed root-writing at -n 1: refused with one
    line, or completed bit-identical to an uninterrupted run."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3", "--write", "ranks")
    assert rc == 3, err
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--resume")
    ref = str(tmp_path / "R.h5")
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "3"))
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    assert np.array_equal(load(out)[0], load(ref)[0])


@pytest.mark.parametrize("args", [["--moduli", "0"], ["--moduli", "17"], ["--target", "0"],
                                  ["--target", "nan"], ["--target", "-1e-8"],
                                  ["--target", "inf"]])
def test_crt_counts_and_targets_refused_before_work(tmp_path, ops, args):
    """Moduli outside 1..16 and targets that are not positive finite numbers: exit 2, one
    line, no output."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", *args)
    assert_one_error(r, code=2)
    assert not out.exists()


def test_overwrite_ranks_written_result_by_root_writing_keep_latest(tmp_path, ops):
    """A complete --write ranks result (-n 3) overwritten by a one-process --keep latest
    job of the same inputs: complete, inspect clean, the C of the new job."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert run("matmul", a, b, "-o", out, "--planes", "2", "--write", "ranks", n=3,
               timeout=120).returncode == 0
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--overwrite", "--keep", "latest"))
    ref = str(tmp_path / "R.h5")
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "3"))
    assert np.array_equal(load(out)[0], load(ref)[0])
    assert_ok(run("inspect", out))
    assert attrs_of(out)["planned"] == attrs_of(ref)["planned"]


def test_keep_latest_stop_resume_other_rank_count_with_ranks_writing(tmp_path, ops):
    """--keep latest --write ranks stopped at -n 2, resumed at -n 3: bit-identical to the
    uninterrupted run, one resolution listed."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3", "--keep",
                         "latest", "--write", "ranks")
    assert rc == 3, err
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--keep", "latest", "--write", "ranks",
            "--resume", n=3, timeout=120)
    assert r.returncode == 0, r.stderr
    ref = str(tmp_path / "R.h5")
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "3"))
    assert np.array_equal(load(out)[0], load(ref)[0])
    import h5py
    with h5py.File(out, "r") as f:
        assert len(f["resolutions"]) == 1
