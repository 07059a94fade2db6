"""Ninth pass, CRT (--final crt), --write ranks, --keep latest combined, after stops and
SIGKILLs, resumed at other rank counts: the last result bit for bit an uninterrupted
run's, what is left on disk what the README says."""
import os
import signal

import numpy as np
import pytest

from adversary import (assert_ok, attrs_of, job_folder, kill_group, load, rank_pid, run,
                       save, start, SLOW)
from adversary9 import same_results, stop_at, wait_completed

CRT = ("--planes", "2", "--final", "crt", "--moduli", "5")


@pytest.fixture(scope="module")
def mats(tmp_path_factory):
    d = tmp_path_factory.mktemp("adv9crt")
    r = np.random.default_rng(91)
    a = save(d / "A.npy", r.standard_normal((160, 60)) * np.logspace(-3, 3, 60))
    b = save(d / "B.npy", r.standard_normal((60, 50)))
    ref = d / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, *CRT))
    C, at = load(ref)
    return d, a, b, C, at


def same_last(out, C, at):
    C1, at1 = load(out)
    assert np.array_equal(C1, C)
    assert at1["bound_abs"] == at["bound_abs"] and at1["bound_rel"] == at["bound_rel"]


def names(out):
    return sorted(os.listdir(job_folder(out)))


def test_stop_inside_crt_ranks_keep_latest_resumed_at_five(mats, tmp_path):
    d, a, b, C, at = mats
    out = tmp_path / "C.h5"
    code, err = stop_at(out, 3, "matmul", a, b, "-o", out, *CRT, "--write", "ranks",
                           "--keep", "latest", n=3, slow="0.35")
    assert code == 3, err
    assert attrs_of(out)["status"] == "deadline"
    assert_ok(run("matmul", a, b, "-o", out, *CRT, "--resume", n=5, timeout=120))
    same_last(out, C, at)
    left = names(out)
    assert not [f for f in left if f.startswith(("sums", "partial", "state"))], left
    assert [f for f in left if f.startswith("res")] == ["res004.h5"], left


def test_stop_inside_crt_deadline_ok_root_then_ranks_resume_alone(mats, tmp_path):
    d, a, b, C, at = mats
    out = tmp_path / "C.h5"
    code, err = stop_at(out, 3, "matmul", a, b, "-o", out, *CRT, "--keep", "latest",
                           "--deadline-ok", n=2, slow="0.35")
    assert code == 0, err
    assert run("inspect", out, "--status").stdout.strip() == "deadline"
    res = run("matmul", a, b, "-o", out, *CRT, "--resume", "--write", "ranks", n=1)
    assert res.returncode in (0, 1, 2), res.stderr
    if res.returncode:
        assert_ok(run("matmul", a, b, "-o", out, *CRT, "--resume"))
    same_last(out, C, at)


def test_worker_sigkill_in_crt_ranks_keep_latest_resumed_at_two(mats, tmp_path):
    d, a, b, C, at = mats
    out = tmp_path / "C.h5"
    p = start("matmul", a, b, "-o", out, *CRT, "--write", "ranks", "--keep", "latest",
              n=4, env={**SLOW, "LRMPI_TEST_SLOW_S": "0.35", "ADV_MARK": "adv9k"})
    try:
        assert wait_completed(out, 3, p, timeout=90)
        os.kill(rank_pid("adv9k", 2), signal.SIGKILL)
        p.communicate(timeout=60)
        assert p.returncode != 0
    finally:
        kill_group(p)
    assert_ok(run("matmul", a, b, "-o", out, *CRT, "--resume", n=2))
    same_last(out, C, at)


def test_root_sigkill_after_res2_ranks_resumed_ranks_at_three(mats, tmp_path):
    d, a, b, C, at = mats
    out = tmp_path / "C.h5"
    p = start("matmul", a, b, "-o", out, *CRT, "--write", "ranks", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.35", "ADV_MARK": "adv9r"})
    try:
        assert wait_completed(out, 2, p, timeout=90)
        os.kill(rank_pid("adv9r", 0), signal.SIGKILL)
        p.communicate(timeout=60)
    finally:
        kill_group(p)
    st = run("inspect", out, "--status").stdout.strip()
    assert st == "killed", st
    assert_ok(run("matmul", a, b, "-o", out, *CRT, "--resume", "--write", "ranks", n=3))
    same_last(out, C, at)
    assert attrs_of(out)["completed"] == 4


def test_two_stops_then_complete_three_counts_keep_latest_crt(mats, tmp_path):
    d, a, b, C, at = mats
    out = tmp_path / "C.h5"
    args = ("matmul", a, b, "-o", out, *CRT, "--keep", "latest", "--write", "ranks")
    code, err = stop_at(out, 1, *args, n=2, slow="0.3")
    assert code == 3, err
    code, err = stop_at(out, 3, *args, "--resume", n=2, slow="0.3")
    assert code == 3, err
    assert_ok(run(*args, "--resume", n=4))
    same_last(out, C, at)
    assert [f for f in names(out) if f.startswith("res")] == ["res004.h5"]


def test_keep_latest_given_again_on_resume_accepted(mats, tmp_path):
    d, a, b, C, at = mats
    out = tmp_path / "C.h5"
    code, err = stop_at(out, 2, "matmul", a, b, "-o", out, *CRT, "--keep", "latest",
                           n=2, slow="0.3")
    assert code == 3, err
    assert_ok(run("matmul", a, b, "-o", out, *CRT, "--keep", "latest", "--resume"))
    same_last(out, C, at)


def test_complete_ranks_crt_result_then_overwrite_keep_latest_by_root(mats, tmp_path):
    d, a, b, C, at = mats
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, *CRT, "--write", "ranks", n=3))
    same_last(out, C, at)
    assert_ok(run("matmul", a, b, "-o", out, *CRT, "--keep", "latest", "--overwrite", n=2))
    same_last(out, C, at)
    subs = [s for s in os.listdir(str(out) + ".d") if not s.startswith(".")]
    assert len(subs) == 1, subs
    assert [f for f in names(out) if f.startswith("res")] == ["res004.h5"]


def test_pairwise_cutoff_crt_ranks_stopped_resumed_other_count_equals_plain(mats, tmp_path):
    d, a, b, _, _ = mats
    opts = ("--planes", "3", "--order", "pairwise", "--cutoff", "2", "--final", "crt",
            "--moduli", "3")
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, *opts))
    out = tmp_path / "C.h5"
    code, err = stop_at(out, 2, "matmul", a, b, "-o", out, *opts, "--write", "ranks",
                           n=3, slow="0.3")
    assert code == 3, err
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--resume", n=2))
    assert same_results(out, ref)
