"""Second adversarial pass, area 2: the CRT resolution, --write ranks, --keep and resumes that
mix rank counts, writers and stops (several stops in a row, a killed worker)."""
import os
import signal

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, attrs_of, exact_product,
                      kill_rank_after_first, load, max_err, run, save, snapshot, start,
                      stop_after)


def _ref(tmp_path, a, b, *opts):
    out = str(tmp_path / "ref.h5")
    assert_ok(run("matmul", a, b, "-o", out, *opts))
    return load(out)[0]


def _listed(out):
    with h5py.File(out, "r") as f:
        return sorted(f["resolutions"].keys())


def _job(out):
    d = str(out) + ".d"
    (sub,) = [s for s in os.listdir(d) if os.path.isdir(os.path.join(d, s))]
    return os.path.join(d, sub)


def test_keep_latest_with_ranks_writing_leaves_one_resolution(tmp_path, ops):
    """--keep latest --write ranks at -n 3: complete, one resolution listed, the folder holds
    only that resolution's files (no resume data), C equal to --keep all's."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--keep", "latest",
                  "--write", "ranks", n=3))
    assert _listed(out) == ["003"]
    names = os.listdir(_job(out))
    assert not any(n.startswith("sums") or n.startswith("state") for n in names), names
    assert all("003" in n for n in names), names
    assert np.array_equal(load(out)[0], _ref(tmp_path, a, b, "--planes", "2"))


def test_keep_latest_stopped_resumed_at_one_rank(tmp_path, ops):
    """--keep latest stopped after resolution 1 at -n 2, resumed (--keep latest) at -n 1:
    bit-identical to the uninterrupted run."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "2", "--keep", "latest")
    assert rc == 3, err
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--keep", "latest", "--resume"))
    assert attrs_of(out)["status"] == "complete"
    assert np.array_equal(load(out)[0], _ref(tmp_path, a, b, "--planes", "2"))


def test_crt_ranks_keep_latest_equals_root_writing(tmp_path, ops):
    """--final crt --moduli 6 --write ranks --keep latest at -n 3 equals the root writing
    --final crt --moduli 6 bit for bit; only the CRT resolution is listed."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    opts = ["--planes", "1", "--final", "crt", "--moduli", "6"]
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--write", "ranks", "--keep", "latest", n=3))
    assert len(_listed(out)) == 1
    assert np.array_equal(load(out)[0], _ref(tmp_path, a, b, *opts))


def test_resume_of_complete_job_changes_nothing(tmp_path, ops):
    """--resume of a complete checkpoint: exit 0, no file in or beside it changes."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    before = snapshot(str(tmp_path / "C.h5.d"))
    C0 = load(out)[0]
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--resume")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert snapshot(str(tmp_path / "C.h5.d")) == before
    assert np.array_equal(load(out)[0], C0)


@pytest.mark.parametrize("other", [["--planes", "3"], ["--bits", "6"], ["--order", "lshape"],
                                   ["--scale", "tensor"], ["--cutoff", "2"],
                                   ["--final", "crt", "--moduli", "3"]])
def test_resume_with_other_options_refused(tmp_path, ops, other):
    """A stopped --planes 2 job resumed with another option: one line, exit 1 or 2, and the
    checkpoint unchanged (status deadline, one resolution)."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "2")
    assert rc == 3, err
    before = snapshot(out + ".d")
    opts = ["--planes", "2"] + other if other[0] != "--planes" else other
    assert_one_error(run("matmul", a, b, "-o", out, *opts, "--resume"), codes=(1, 2))
    assert snapshot(out + ".d") == before
    assert attrs_of(out)["status"] == "deadline"


def test_root_stop_then_resume_with_ranks_writing(tmp_path, ops):
    """Stopped with the root writing at -n 2, resumed with --write ranks at -n 3: the
    README says a resume continues with the root writing; either way bit-identical."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "2")
    assert rc == 3, err
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--write", "ranks", "--resume", n=3)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    assert np.array_equal(load(out)[0], _ref(tmp_path, a, b, "--planes", "2"))


def test_three_stops_then_complete_bit_identical(tmp_path, ops):
    """Stop after resolution 1, resume and stop after 2 (SIGUSR1), resume and stop after 3
    (SIGTERM), resume to the end: bit-identical to the uninterrupted 5-resolution run."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    opts = ["--planes", "3"]
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, *opts)
    assert rc == 3, err
    for count, sig in ((2, signal.SIGUSR1), (3, signal.SIGTERM)):
        rc, err = stop_after(out, count, "matmul", a, b, "-o", out, *opts, "--resume", sig=sig)
        assert rc in (0, 3), err
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--resume"))
    assert len(_listed(out)) == 5
    assert np.array_equal(load(out)[0], _ref(tmp_path, a, b, *opts))


def test_worker_sigkill_with_ranks_writing_then_resume_other_count(tmp_path, ops):
    """SIGKILL of worker rank 2 of a --write ranks job at -n 3 after resolution 1: the job
    ends by itself; every listed resolution reads; --resume at -n 2 completes bit-identical."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    mark = f"adv2-{os.getpid()}"
    p = start("matmul", a, b, "-o", out, "--planes", "2", "--write", "ranks", n=3,
              env={"ADV_MARK": mark, "LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "0.5",
                   "LRMPI_ROOT_COMPUTES": "no"})
    kill_rank_after_first(p, out, mark, 2)
    listed = _listed(out)
    assert listed
    for name in listed:
        with h5py.File(out, "r") as f:
            assert np.isfinite(f["resolutions"][name]["C"][()]).all()
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--resume", n=2))
    assert np.array_equal(load(out)[0], _ref(tmp_path, a, b, "--planes", "2"))


def test_crt_pairwise_cutoff_bounds_rigorous_and_monotone(tmp_path, rng):
    """--order pairwise --cutoff 2 --final crt --moduli 4 on rows of very different sizes:
    every resolution's bound_abs >= its true error (exact rationals), bounds never increase."""
    A = rng.standard_normal((12, 10)) * np.logspace(-6, 6, 12)[:, None]
    B = rng.standard_normal((10, 8))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--order", "pairwise",
                  "--cutoff", "2", "--final", "crt", "--moduli", "4"))
    exact = exact_product(A, B)
    bounds = []
    with h5py.File(out, "r") as f:
        for name in sorted(f["resolutions"].keys()):
            g = f["resolutions"][name]
            bounds.append(float(g.attrs["bound_abs"]))
            assert max_err(g["C"][()], exact) <= bounds[-1]
    assert all(x >= y for x, y in zip(bounds, bounds[1:])), bounds


def test_target_fp32_after_one_plane_met_by_bound(tmp_path, rng):
    """--planes 1 --final crt --target fp32 at -n 2 --write ranks: the last bound_rel is
    <= 6e-8 and the true error (exact rationals) is within bound_abs."""
    A = rng.standard_normal((20, 30))
    B = rng.standard_normal((30, 10))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--final", "crt", "--target",
                  "fp32", "--write", "ranks", n=2))
    C, attrs = load(out)
    with h5py.File(out, "r") as f:
        last = f["resolutions"][sorted(f["resolutions"].keys())[-1]]
        assert last.attrs["bound_rel"] <= 6e-8
        assert max_err(C, exact_product(A, B)) <= last.attrs["bound_abs"]


def test_crt_integers_exact_with_ranks_writing(tmp_path, rng):
    """Small integers, --final crt --moduli 16 --write ranks at -n 3: the exact product."""
    A = rng.integers(-1000, 1000, (17, 9)).astype(np.float64)
    B = rng.integers(-1000, 1000, (9, 5)).astype(np.float64)
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--final", "crt", "--moduli",
                  "16", "--write", "ranks", n=3))
    assert np.array_equal(load(out)[0], A @ B)


def test_resume_keep_latest_after_complete_job_refuses_keep_all(tmp_path, ops):
    """A complete --keep latest job resumed with --keep all: refused with one line (the
    README: a --keep other than the resumed checkpoint's), nothing changes."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--keep", "latest"))
    before = snapshot(out + ".d")
    assert_one_error(run("matmul", a, b, "-o", out, "--planes", "2", "--keep", "all",
                         "--resume"), codes=(1, 2))
    assert snapshot(out + ".d") == before
