"""Seventh adversarial pass, area 2: CRT / `--write ranks` / `--keep latest` / mixed
resumes, in depth — stops (SIGTERM) and SIGKILLs at each phase (after a layered
resolution, inside the CRT resolution), resumed at 1, 2 and 3 ranks with the other write
mode, orders and scales the earlier passes did not combine. The README: `--resume`
continues bit-identical to an uninterrupted run; a resumed job keeps the checkpoint's
`keep`; `--keep latest` lists and keeps only the last resolution's file (and the resume data
while the job runs, none once complete); bounds never increase; the CRT resolution is
bit-identical at 1, 2, 3 ranks, with the ranks writing, and across a resume."""
import glob
import os
import shutil
import signal

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, attrs_of, exact_product, job_folder,
                       kill_group, load, max_err, run, save, start, stop_after, wait_for, SLOW)


def wait_completed(out, count, proc, timeout=60):
    """Until the job file's `completed` reaches count (`--keep latest` lists one)."""
    import time
    limit = time.time() + timeout
    while time.time() < limit and proc.poll() is None:
        try:
            with h5py.File(out, "r") as f:
                if f.attrs["completed"] >= count:
                    return True
        except (OSError, KeyError):
            pass
        time.sleep(0.02)
    return False


def listed(out):
    with h5py.File(out, "r") as f:
        return sorted(f["resolutions"])


def bounds_of(out):
    with h5py.File(out, "r") as f:
        return [f["resolutions"][k].attrs["bound_abs"] for k in sorted(f["resolutions"])]


@pytest.fixture
def wide(tmp_path, rng):
    """Operands with rows and columns over ~6 decades (the fallback and CRT both matter)."""
    A = rng.standard_normal((30, 20)) * np.exp(rng.standard_normal((30, 1)) * 3)
    B = rng.standard_normal((20, 12)) * np.exp(rng.standard_normal((1, 12)) * 3)
    return save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B), A, B


def reference(tmp_path, a, b, *opts):
    ref = str(tmp_path / "ref.h5")
    assert_ok(run("matmul", a, b, "-o", ref, *opts))
    return load(ref)


@pytest.mark.parametrize("first, second", [(3, 1), (2, 3)])
def test_crt_ranks_keep_latest_stopped_resumed_at_other_count(tmp_path, wide, first, second):
    """`--final crt --moduli 4 --write ranks --keep latest`, stopped by SIGTERM after
    resolution 1 at `first` ranks, resumed at `second`: exit 0, C bit-identical to an
    uninterrupted one-rank root-writing run of the same options, one resolution file left
    and no resume data."""
    a, b, A, B = wide
    opts = ("--planes", "2", "--final", "crt", "--moduli", "4", "--keep", "latest")
    Cref, aref = reference(tmp_path, a, b, *opts)
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, *opts, "--write", "ranks",
                         n=first)
    assert rc in (0, 3), err
    r = run("matmul", a, b, "-o", out, *opts, "--write", "ranks", "--resume", n=second)
    assert_ok(r)
    C, at = load(out)
    assert np.array_equal(C, Cref)
    assert at["bound_abs"] == aref["bound_abs"]
    jf = job_folder(out)
    assert len(listed(out)) == 1
    assert glob.glob(os.path.join(jf, "sums*.h5")) == []
    assert len(glob.glob(os.path.join(jf, "res*.h5"))) == 1


def freeze_when_listed(out, count, p, timeout=60):
    """Poll the job file without sleeping; SIGSTOP the job's group as soon as `count`
    resolutions are listed, then SIGKILL it: (resolutions listed, status) at the kill."""
    import time
    limit = time.time() + timeout
    try:
        while p.poll() is None and time.time() < limit:
            try:
                with h5py.File(out, "r") as f:
                    if len(f["resolutions"]) >= count:
                        os.killpg(p.pid, signal.SIGSTOP)
                        break
            except (OSError, KeyError):
                pass
        with h5py.File(out, "r") as f:
            return len(f["resolutions"]), f.attrs["status"]
    finally:
        kill_group(p)


def test_sigkill_inside_crt_resolution_then_resume_at_one_rank(tmp_path, wide):
    """SIGKILL of the whole `mpiexec -n 3` job (frozen first) once the layers are listed
    and the CRT resolution is not (a slow worker): `--resume` at one rank completes it
    bit-identical to an uninterrupted run; every resolution listed before still reads."""
    a, b, A, B = wide
    opts = ("--planes", "2", "--final", "crt", "--moduli", "6")
    Cref, aref = reference(tmp_path, a, b, *opts)
    out = str(tmp_path / "C.h5")
    for attempt in range(3):
        p = start("matmul", a, b, "-o", out, *opts, n=3, env={**SLOW, "LRMPI_TEST_SLOW_S": "0.3",
                  "LRMPI_TILES_PER_WORKER": "8", "LRMPI_MIN_TILE_ROWS": "1"})
        n, status = freeze_when_listed(out, 3, p)
        if n == 3:
            break
        os.remove(out)
        shutil.rmtree(out + ".d")
    else:
        pytest.skip("the CRT resolution was always listed before the kill")
    before = listed(out)
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--resume"))
    C, at = load(out)
    assert np.array_equal(C, Cref) and at["method"] == aref["method"]
    assert listed(out)[:len(before)] == before


def test_sigkill_between_crt_listed_and_complete_then_resume(tmp_path, rng):
    """`--planes 1 --final crt --moduli 3`, frozen and SIGKILLed as soon as resolution 2
    (the CRT one, the last) is listed while the file still says `running`: `--resume`
    finishes the job (status complete), C as an uninterrupted run's."""
    A, B = rng.standard_normal((200, 100)), rng.standard_normal((100, 150))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    opts = ("--planes", "1", "--final", "crt", "--moduli", "3")
    Cref, _ = reference(tmp_path, a, b, *opts)
    out = str(tmp_path / "C.h5")
    for attempt in range(3):
        n, status = freeze_when_listed(out, 2, start("matmul", a, b, "-o", out, *opts))
        if status == "running":
            break
        os.remove(out)
        shutil.rmtree(out + ".d")
    else:
        pytest.skip("the window between listing and `complete` was never hit")
    r = run("matmul", a, b, "-o", out, *opts, "--resume")
    assert_ok(r)
    assert attrs_of(out)["status"] == "complete"
    assert np.array_equal(load(out)[0], Cref)


def test_sigkill_after_first_resolution_ranks_writing_resume_root_writing(tmp_path, ops):
    """SIGKILL (every process) of a `--write ranks --keep latest` job at 3 ranks once
    resolution 1 is listed; `--resume` at 2 ranks with the root writing (the README: a
    resume continues with the root writing) completes bit-identical; no temporary file
    is left anywhere."""
    a, b, A, B = ops
    opts = ("--planes", "3", "--keep", "latest")
    Cref, _ = reference(tmp_path, a, b, *opts)
    out = str(tmp_path / "C.h5")
    p = start("matmul", a, b, "-o", out, *opts, "--write", "ranks", n=3,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.3"})
    try:
        wait_for(out, 1, p, timeout=90)
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        kill_group(p)
    r = run("matmul", a, b, "-o", out, *opts, "--resume", n=2)
    if r.returncode != 0:   # a write mode switch may be refused, with one line
        assert_one_error(r, code=1)
        r = run("matmul", a, b, "-o", out, *opts, "--write", "ranks", "--resume", n=2)
    assert_ok(r)
    assert np.array_equal(load(out)[0], Cref)
    assert [f for d, _, fs in os.walk(out + ".d") for f in fs if ".tmp." in f] == []


def test_pairwise_tensor_cutoff_crt_bounds_rigorous_monotone(tmp_path, wide):
    """`--order pairwise --scale tensor --cutoff 2 --final crt --moduli 3` at 2 ranks with
    the ranks writing: every resolution's bound covers the true error (exact rationals),
    and bounds never increase."""
    a, b, A, B = wide
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--order", "pairwise",
                  "--scale", "tensor", "--cutoff", "2", "--final", "crt", "--moduli", "3",
                  "--write", "ranks", n=2))
    exact = exact_product(A, B)
    bs = bounds_of(out)
    assert all(x >= y for x, y in zip(bs, bs[1:])), bs
    with h5py.File(out, "r") as f:
        for k in f["resolutions"]:
            g = f["resolutions"][k]
            assert max_err(g["C"][()], exact) <= g.attrs["bound_abs"], k


def test_lshape_crt_integers_exact_keep_latest_three_ranks(tmp_path, rng):
    """Integer operands (|x| <= 1000) with `--order lshape --final crt --moduli 4 --keep
    latest` at 3 ranks: the CRT resolution is the exact product, bound covering 0 error."""
    A = rng.integers(-1000, 1000, (17, 9)).astype(np.float64)
    B = rng.integers(-1000, 1000, (9, 11)).astype(np.float64)
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--order", "lshape",
                  "--final", "crt", "--moduli", "4", "--keep", "latest", n=3))
    C, at = load(out)
    assert np.array_equal(C, A @ B)
    assert at["bound_abs"] >= 0


def test_keep_latest_resumed_twice_across_counts_ends_with_no_resume_data(tmp_path, ops):
    """`--keep latest` stopped at 2 ranks, resumed at 3 and stopped again, resumed at 1 (no
    `--keep` spelled: the checkpoint's applies): bit-identical, one file listed, no sums."""
    a, b, A, B = ops
    opts = ("--planes", "4", "--order", "pairwise")
    Cref, _ = reference(tmp_path, a, b, *opts, "--keep", "latest")
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, *opts, "--keep", "latest", n=2,
                         slow="0.3")
    assert rc == 3, err
    k = attrs_of(out)["completed"]
    p = start("matmul", a, b, "-o", out, *opts, "--resume", n=3,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.3"})
    try:
        if wait_completed(out, k + 1, p):
            os.killpg(p.pid, signal.SIGTERM)
        p.communicate(timeout=60)
        assert p.returncode in (0, 3), p.returncode
    finally:
        kill_group(p)
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--resume"))
    assert np.array_equal(load(out)[0], Cref)
    assert attrs_of(out)["keep"] == "latest"
    assert len(listed(out)) == 1
    assert glob.glob(os.path.join(job_folder(out), "sums*")) == []


def test_keep_all_on_resume_of_stopped_keep_latest_refused_then_resumes(tmp_path, ops):
    """A `--keep latest` job stopped; `--resume --keep all`: refused with one line naming
    --keep, and the stopped checkpoint is left as it was (still resumable)."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    rc, _ = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3", "--keep", "latest")
    assert rc == 3
    before = attrs_of(out)
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--keep", "all", "--resume")
    assert_one_error(r, codes=(1, 2), contains=("keep",))
    after = attrs_of(out)
    assert after["completed"] == before["completed"] and after["job_id"] == before["job_id"]
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--resume"))


@pytest.mark.parametrize("keep", ["all", "latest"])
def test_complete_crt_ranks_writing_inspects_clean(tmp_path, ops, keep):
    """A complete `--final crt --moduli 3 --write ranks` job at 2 ranks (nothing damaged):
    `inspect` exits 0 and shows every resolution verified (it reads and checks every file
    of the checkpoint)."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--moduli",
                  "3", "--write", "ranks", "--keep", keep, n=2))
    r = run("inspect", out)
    assert r.returncode == 0 and "verified" in r.stdout, r.stdout + r.stderr


def test_crt_fallback_example_ranks_writing_resumed(tmp_path):
    """The README's fallback example with `--final crt --write ranks` at 3 ranks, then
    `--resume` of the complete job at 2: C[0,1] = 2e100, the bound finite; the resume
    changes nothing."""
    A = np.array([[1e100, 1], [1, 1]])
    B = np.array([[1, 1], [1, 1e100]])
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt",
                  "--moduli", "5", "--write", "ranks", n=3))
    C, at = load(out)
    assert C[0, 1] == 2e100 and np.isfinite(at["bound_abs"])
    before = attrs_of(out)["job_id"]
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt",
                  "--moduli", "5", "--write", "ranks", "--resume", n=2))
    C2, _ = load(out)
    assert np.array_equal(C, C2) and attrs_of(out)["job_id"] == before


def test_overwrite_crt_ranks_result_with_other_moduli_stopped_keeps_resumable(tmp_path, ops):
    """A complete `--moduli 2` result overwritten by `--moduli 5` (same inputs) that is
    stopped after resolution 1: exit 3 and the old result as it was; then `--resume
    --moduli 5` (or, if that is refused with one line, `--overwrite` again) completes
    bit-identical to an uninterrupted `--moduli 5` run."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    base = ("--planes", "3", "--final", "crt", "--write", "ranks")
    assert_ok(run("matmul", a, b, "-o", out, *base, "--moduli", "2", n=2))
    Cref, _ = reference(tmp_path, a, b, "--planes", "3", "--final", "crt", "--moduli", "5")
    C0, a0 = load(out)
    p = start("matmul", a, b, "-o", out, *base, "--moduli", "5", "--overwrite", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.3"})
    try:   # the old result stays listed: wait for the new job's own first file
        import time
        limit = time.time() + 60
        while len(glob.glob(out + ".d/*/res001.h5")) < 2 and p.poll() is None:
            assert time.time() < limit
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGTERM)
        p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert p.returncode == 3, p.returncode
    C, at = load(out)
    assert np.array_equal(C, C0) and at["bound_abs"] == a0["bound_abs"]
    r = run("matmul", a, b, "-o", out, *base, "--moduli", "5", "--resume", n=3)
    if r.returncode != 0:   # the kept result is of other options: refused, one line
        assert_one_error(r, codes=(1, 2))
        assert np.array_equal(load(out)[0], C0)
        r = run("matmul", a, b, "-o", out, *base, "--moduli", "5", "--overwrite", n=3)
    assert_ok(r)
    assert np.array_equal(load(out)[0], Cref)
