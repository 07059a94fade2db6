"""Area 2: the CRT resolution, --write ranks, --keep, resumes across modes and rank counts."""
import os

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, exact_product, load, max_err, run, save,
                      snapshot, stop_after)



def bounds(out):
    with h5py.File(out, "r") as f:
        rs = f["resolutions"]
        return [(int(k), float(rs[k].attrs["bound_abs"]), float(rs[k].attrs["bound_rel"]),
                 rs[k].attrs.get("method")) for k in sorted(rs)]


def all_C(out):
    with h5py.File(out, "r") as f:
        return {k: f["resolutions"][k]["C"][()] for k in f["resolutions"]}


def stop_after_first(out, *args, n, env):
    """SIGTERM once resolution 1 is listed; (returncode, stderr)."""
    return stop_after(out, 1, *args, n=n, env=env)


def test_crt_bit_identical_across_rank_counts(tmp_path, ops):
    a, b, A, B = ops
    Cs = []
    for n in (None, 1, 2, 3):
        out = tmp_path / f"C{n}.h5"
        assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--final", "crt", "--moduli", "6",
                      n=n))
        Cs.append(load(out)[0])
    for C in Cs[1:]:
        assert np.array_equal(C, Cs[0])


@pytest.mark.parametrize("moduli", ["2", "5", "16"])
def test_crt_bound_rigorous_and_monotone(tmp_path, ops, moduli):
    """After one plane, N moduli: every bound >= the true error (exact rationals), never up."""
    a, b, A, B = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--final", "crt", "--moduli", moduli))
    exact = exact_product(A, B)
    bs = bounds(out)
    Cs = all_C(out)
    for (i, babs, brel, _), (j, nxt, _, _) in zip(bs, bs[1:]):
        assert nxt <= babs, bs
    for i, babs, _, _ in bs:
        assert max_err(Cs[f"{i:03d}"], exact) <= babs, (i, babs)


def test_crt_integers_exact(tmp_path, rng):
    """Small integer matrices: the CRT resolution with 16 moduli is the exact product."""
    A = rng.integers(-1000, 1000, (20, 30)).astype(np.float64)
    B = rng.integers(-1000, 1000, (30, 10)).astype(np.float64)
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--final", "crt", "--moduli", "16"))
    C, attrs = load(out)
    assert np.array_equal(C, A @ B)


def test_target_reached_by_bound(tmp_path, ops):
    """--target 1e-9: the final bound_rel <= 1e-9 and the true error below the bound."""
    a, b, A, B = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--final", "crt", "--target", "1e-9"))
    C, attrs = load(out)
    assert attrs["bound_rel"] <= 1e-9
    assert max_err(C, exact_product(A, B)) <= attrs["bound_abs"]


@pytest.mark.parametrize("args", [["--target", "1e-30"], ["--target", "0"], ["--target", "-1e-3"],
                                  ["--target", "nan"], ["--moduli", "17"], ["--moduli", "0"],
                                  ["--target", "fp16"]])
def test_crt_options_refused_before_work(tmp_path, ops, args):
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--final", "crt", *args)
    assert_one_error(r, codes=(1, 2))
    assert not out.exists()


def test_moduli_without_final_crt(tmp_path, ops):
    """--moduli without --final crt would be silently dropped: refused or honoured, never
    ignored (a file whose last method is crt, or an error)."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "1", "--moduli", "4")
    if r.returncode == 0:
        assert bounds(out)[-1][3] == "crt"
    else:
        assert_one_error(r, code=2)


def test_resume_complete_crt_with_other_moduli_refused(tmp_path, ops):
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--final", "crt", "--moduli", "4"))
    before = snapshot(out + ".d")
    r = run("matmul", a, b, "-o", out, "--planes", "1", "--final", "crt", "--moduli", "8",
            "--resume")
    assert_one_error(r, codes=(1, 2))
    assert snapshot(out + ".d") == before


def test_keep_latest_crt_only_last_file(tmp_path, ops):
    """--keep latest with --final crt: after completion the job lists one resolution (the
    CRT one), its folder holds one resolution file and no resume data, and it loads."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--moduli", "6",
                  "--keep", "latest", n=2))
    with h5py.File(out, "r") as f:
        assert len(f["resolutions"]) == 1
    files = [x for d, _, fs in os.walk(out + ".d") for x in fs if x != ".lock"]
    assert [x for x in files if x.startswith("res")] and not [x for x in files if x.startswith("sums")]
    assert len([x for x in files if x.startswith("res")]) == 1, files
    load(out)
    assert_ok(run("inspect", out))


def test_keep_mismatch_on_resume_refused(tmp_path, ops):
    """A stopped --keep latest job resumed with --keep all: refused, one line, nothing lost."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after_first(out, "matmul", a, b, "-o", out, "--planes", "3", "--keep", "latest",
                               n=2, env=None)
    assert rc == 3, err
    before = snapshot(out + ".d")
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--keep", "all", "--resume")
    assert_one_error(r, code=2)
    snap = snapshot(out + ".d")
    assert {k: v for k, v in snap.items() if k.endswith(".h5")} == \
        {k: v for k, v in before.items() if k.endswith(".h5")}


def test_ranks_stopped_then_resumed_at_other_count_bit_identical(tmp_path, ops):
    """--write ranks at -n 3 stopped after resolution 1, resumed at -n 2 with the root
    writing, then nothing more: every resolution equals an uninterrupted -n 1 run's."""
    a, b, _, _ = ops
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "3"))
    out = str(tmp_path / "C.h5")
    env = {"LRMPI_MIN_TILE_ROWS": "8"}
    rc, err = stop_after_first(out, "matmul", a, b, "-o", out, "--planes", "3", "--write", "ranks",
                               n=3, env=env)
    assert rc == 3, err
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--resume", n=2))
    ra, rb = all_C(ref), all_C(out)
    assert ra.keys() == rb.keys()
    for k in ra:
        assert np.array_equal(ra[k], rb[k]), k


def test_crt_stopped_inside_then_resumed_with_ranks_writing(tmp_path, ops):
    """A CRT job stopped after its first resolution, resumed with --write ranks at -n 3:
    the final C equals an uninterrupted run's, the bounds never increase."""
    a, b, _, _ = ops
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "2", "--final", "crt", "--moduli", "7"))
    out = str(tmp_path / "C.h5")
    rc, err = stop_after_first(out, "matmul", a, b, "-o", out, "--planes", "2", "--final", "crt",
                               "--moduli", "7", n=2, env=None)
    assert rc == 3, err
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--moduli", "7",
            "--resume", "--write", "ranks", n=3)
    if r.returncode != 0:
        assert_one_error(r, code=2)   # a resume that may not switch modes says so
        return
    assert np.array_equal(load(out)[0], load(ref)[0])
    bs = bounds(out)
    assert all(y[1] <= x[1] for x, y in zip(bs, bs[1:])), bs


def test_ranks_one_process(tmp_path, ops):
    """--write ranks without workers (-n 1): completes with the same C as the root writing,
    or says in one line that it needs workers."""
    a, b, _, _ = ops
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "2"))
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--write", "ranks", n=1)
    if r.returncode == 0:
        assert np.array_equal(load(out)[0], load(ref)[0])
    else:
        assert_one_error(r, code=2)


def test_pack_of_ranks_written_crt_reads_with_plain_h5py(tmp_path, ops):
    """pack of a --write ranks + CRT checkpoint: plain h5py reads every resolution's C from
    the one file, equal to load_result's, after the original folder is gone."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--moduli", "5",
                  "--write", "ranks", n=3))
    C = load(out)[0]
    one = tmp_path / "ONE.h5"
    assert_ok(run("pack", out, one))
    os.rename(out + ".d", str(tmp_path / "moved.d"))
    with h5py.File(one, "r") as f:
        last = f["resolutions"][f"{f.attrs['completed']:03d}"]
        assert np.array_equal(last["C"][()], C)


@pytest.mark.parametrize("opts", [["--scale", "tensor"], ["--order", "lshape"],
                                  ["--order", "pairwise", "--cutoff", "2"], ["--bits", "3"]])
def test_crt_wide_range_rows_and_zero_row(tmp_path, rng, opts):
    """Rows from 1e-30 to 1e30, columns 1e10..1e-10, a zero row, with other scales, orders,
    cutoffs and bits, then 1, 3 or 16 moduli: every bound >= the true error, never up."""
    A = rng.standard_normal((12, 20)) * np.logspace(-30, 30, 12)[:, None]
    B = rng.standard_normal((20, 9)) * np.logspace(10, -10, 9)[None, :]
    A[3] = 0
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    exact = exact_product(A, B)
    for moduli in ("1", "3", "16"):
        out = tmp_path / f"C{moduli}.h5"
        assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt",
                      "--moduli", moduli, *opts))
        bs, Cs = bounds(out), all_C(out)
        assert all(y[1] <= x[1] for x, y in zip(bs, bs[1:])), bs
        for i, babs, _, _ in bs:
            assert max_err(Cs[f"{i:03d}"], exact) <= babs, (moduli, i)


@pytest.mark.parametrize("final", [None, "crt"])
def test_rank_files_of_a_resolution_never_listed_do_not_block_a_resume(tmp_path, ops, final):
    """A stop that lands after some ranks sealed resolution k + 1 but before the last
    answered leaves their rank files beside a job file listing k (CI saw it at 3 ranks: a
    CRT job's resume refused, "the rank files do not cover C"). Planted here, those of a
    larger run among them: the resume at -n 2 completes bit-identical to an uninterrupted
    run, and the files of resolutions never listed are gone."""
    import shutil

    a, b, _, _ = ops
    crt = ["--final", "crt", "--moduli", "3"] if final else []
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "3", *crt))
    out = str(tmp_path / "C.h5")
    rc, err = stop_after_first(out, "matmul", a, b, "-o", out, "--planes", "3", "--write",
                               "ranks", *crt, n=3, env={"LRMPI_MIN_TILE_ROWS": "8"})
    assert rc == 3, err
    with h5py.File(out, "r") as f:
        done, planned, job = int(f.attrs["completed"]), int(f.attrs["planned"]), f.attrs["job_id"]
    assert done < planned
    folder = os.path.join(out + ".d", job)
    first = sorted(n for n in os.listdir(folder) if n.startswith("rank") and n.endswith(
        f"-res{done:03d}.h5"))
    assert first, os.listdir(folder)
    # sealed rank files of the next resolution: one of these ranks, one of a 5-rank run;
    # and those of the CRT resolution (C tiles, no level sums)
    planted = [f"rank0001-res{done + 1:03d}.h5", f"rank0004-res{done + 1:03d}.h5",
               f"rank0002-res{planned:03d}.h5"]
    for name in planted:
        shutil.copyfile(os.path.join(folder, first[0]), os.path.join(folder, name))
    assert_ok(run("inspect", out))  # it reads and checks every file
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", *crt, "--resume", n=2))
    ra, rb = all_C(ref), all_C(out)
    assert ra.keys() == rb.keys()
    for k in ra:
        assert np.array_equal(ra[k], rb[k]), k
    left = set(os.listdir(folder))
    assert "rank0004-res%03d.h5" % (done + 1) not in left, left
