"""Eighth adversarial pass, area 2: CRT / `--write ranks` / `--keep latest` / mixed resumes
— CRT with the ranks writing and `--keep latest` stopped and resumed at other rank counts,
three runs at three rank counts, SIGKILLs of the whole job or one worker at each phase,
`--final crt` added to a stopped job, `--deadline-ok` with a CRT keep-latest stop, an
`--overwrite` of a complete CRT result stopped then resumed. The README: `--resume`
continues bit-identical to an uninterrupted run and refuses other options; a resumed job
keeps the checkpoint's `keep`; `--keep latest` keeps only the last resolution (no resume data
once complete); exit 3 (0 with --deadline-ok) after a stop with a resolution on disk."""
import os
import signal
import time

import numpy as np
import pytest

from adversary import (SLOW, assert_ok, assert_one_error, attrs_of, job_folder, kill_group,
                       load, rank_pid, run, start)
from test_adv7_crt_keep import wait_completed

CRT = ("--planes", "2", "--final", "crt", "--moduli", "3")


def ref(tmp_path, a, b, *opts, n=None):
    out = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", out, *opts, n=n))
    return load(out)[0]


def stop_at(out, count, *args, n=2, sig=signal.SIGTERM, env=None, slow="0.5"):
    """Start with a slow worker, send `sig` to the group once `completed` >= count."""
    p = start(*args, n=n, env={**SLOW, "LRMPI_TEST_SLOW_S": slow, "ADV_MARK": "adv8c",
                               **(env or {})})
    try:
        assert wait_completed(out, count, p), "the job ended first"
        os.killpg(p.pid, sig)
        _, err = p.communicate(timeout=60)
        return p.returncode, err
    finally:
        kill_group(p)


def files(out):
    return sorted(os.listdir(job_folder(out)))


def test_crt_ranks_keep_latest_stopped_at_two_resumed_alone(tmp_path, ops):
    """`--final crt --moduli 3 --keep latest --write ranks` at 2 ranks, SIGTERM after res 1
    (exit 3), resumed alone with the same options: complete, C equal to an uninterrupted
    run alone, one resolution file and no resume data left."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    opts = (*CRT, "--keep", "latest", "--write", "ranks")
    code, err = stop_at(out, 1, "matmul", a, b, "-o", out, *opts)
    assert code == 3, err
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--resume"))
    assert np.array_equal(load(out)[0], ref(tmp_path, a, b, *CRT))
    assert not [f for f in files(out) if f.startswith("sums") or "-res" in f and "rank" not in f]
    assert attrs_of(out)["completed"] == attrs_of(out)["planned"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_keep_latest_crt_stopped_after_res2_resumes(tmp_path, ops, sig):
    """`--planes 2 --final crt --moduli 3 --keep latest` at 2 ranks stopped (SIGTERM or
    SIGKILL) once res 2 is complete; `--resume` alone: complete, equal to uninterrupted."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    opts = (*CRT, "--keep", "latest")
    stop_at(out, 2, "matmul", a, b, "-o", out, *opts, sig=sig)
    r = run("matmul", a, b, "-o", out, *opts, "--resume")
    assert "Traceback" not in r.stderr, r.stderr
    assert_ok(r)
    assert np.array_equal(load(out)[0], ref(tmp_path, a, b, *CRT))


def test_three_runs_at_three_rank_counts_pairwise_crt(tmp_path, ops):
    """`--order pairwise --planes 2 --final crt --moduli 2` (5 resolutions): stopped at 3
    ranks after res 1, at 2 ranks after res 3, completed alone: equal to uninterrupted."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    opts = ("--order", "pairwise", "--planes", "2", "--final", "crt", "--moduli", "2")
    assert stop_at(out, 1, "matmul", a, b, "-o", out, *opts, n=3)[0] == 3
    assert stop_at(out, 3, "matmul", a, b, "-o", out, *opts, "--resume", n=2)[0] == 3
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--resume"))
    assert np.array_equal(load(out)[0], ref(tmp_path, a, b, *opts))


def test_sigkill_of_the_whole_job_after_res2_resumed_at_two(tmp_path, ops):
    """SIGKILL of `mpiexec -n 3` (whole group) with the ranks writing, `--keep latest`, once
    res 2 is complete: `--resume` at 2 ranks completes equal to an uninterrupted run."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    opts = ("--planes", "3", "--keep", "latest", "--write", "ranks")
    stop_at(out, 2, "matmul", a, b, "-o", out, *opts, n=3, sig=signal.SIGKILL)
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--resume", n=2))
    assert np.array_equal(load(out)[0], ref(tmp_path, a, b, "--planes", "3"))


def test_worker_sigkill_inside_keep_latest_crt_then_resume_alone(tmp_path, ops):
    """Rank 1 SIGKILLed once res 1 of a `--keep latest --final crt` job (root writing, 3
    ranks) is complete: the job ends non-zero; `--resume` alone completes equal to
    uninterrupted."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    opts = (*CRT, "--keep", "latest")
    p = start("matmul", a, b, "-o", out, *opts, n=3,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.5", "ADV_MARK": "adv8k"})
    try:
        assert wait_completed(out, 1, p)
        os.kill(rank_pid("adv8k", 1), signal.SIGKILL)
        p.communicate(timeout=60)
        assert p.returncode != 0
    finally:
        kill_group(p)
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--resume"))
    assert np.array_equal(load(out)[0], ref(tmp_path, a, b, *CRT))


def test_final_crt_added_to_a_stopped_job_refused_then_plain_resume(tmp_path, ops):
    """A stopped layered job resumed with `--final crt` added: one line, nothing changed;
    then resumed with its own options: complete, equal to uninterrupted."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    assert stop_at(out, 1, "matmul", a, b, "-o", out, "--planes", "3")[0] == 3
    before = attrs_of(out)["completed"]
    assert_one_error(run("matmul", a, b, "-o", out, "--planes", "3", "--final", "crt",
                         "--resume"), codes=(1, 2))
    assert attrs_of(out)["completed"] == before
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--resume"))
    assert np.array_equal(load(out)[0], ref(tmp_path, a, b, "--planes", "3"))


def test_deadline_ok_crt_keep_latest_stop_exit_0_then_resume(tmp_path, ops):
    """`--deadline-ok` with a CRT keep-latest job stopped after res 1: exit 0, status
    `deadline`; `--resume` completes; only the last resolution's file is left."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    opts = (*CRT, "--keep", "latest", "--deadline-ok")
    code, err = stop_at(out, 1, "matmul", a, b, "-o", out, *opts)
    assert code == 0, err
    assert attrs_of(out)["status"] == "deadline"
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--resume"))
    assert attrs_of(out)["status"] == "complete"
    assert files(out) == [f"res{attrs_of(out)['planned']:03d}.h5"]


def test_overwrite_of_complete_crt_result_stopped_then_resumed(tmp_path, ops):
    """A complete CRT result; an `--overwrite` of the same inputs with the ranks writing
    stopped after res 1: exit 3, load_result still the old CRT result; `--resume`
    completes, equal to it."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, *CRT))
    C0, _ = load(out)
    code, err = stop_overwrite(out, a, b)
    assert code == 3, err
    assert np.array_equal(load(out)[0], C0)
    assert_ok(run("matmul", a, b, "-o", out, *CRT, "--write", "ranks", "--resume"))
    assert np.array_equal(load(out)[0], C0)


def stop_overwrite(out, a, b):
    """SIGTERM an `--overwrite --write ranks` of `out` once its new job folder holds a
    resolution file (the job file still lists the old result)."""
    d = str(out) + ".d"
    old = set(os.listdir(d))
    p = start("matmul", a, b, "-o", out, *CRT, "--overwrite", "--write", "ranks", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.5"})
    try:
        limit = time.time() + 60
        while time.time() < limit and p.poll() is None:
            new = [x for x in os.listdir(d) if x not in old and os.path.isdir(os.path.join(d, x))]
            if new and any(f.startswith("res") and f.endswith(".h5")
                           for f in os.listdir(os.path.join(d, new[0]))):
                break
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        return p.returncode, err
    finally:
        kill_group(p)


def test_ranks_keep_latest_complete_resumed_at_one_changes_nothing(tmp_path, ops):
    """A complete `--write ranks --keep latest` job at 3 ranks: `--resume` alone exits 0
    and changes no file; only the last resolution and its rank files remain."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    opts = ("--planes", "2", "--write", "ranks", "--keep", "latest")
    assert_ok(run("matmul", a, b, "-o", out, *opts, n=3))
    from adversary import snapshot
    before = snapshot(tmp_path)
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--resume"))
    assert snapshot(tmp_path) == before
    assert all(f.endswith("res003.h5") for f in files(out)), files(out)


def test_keep_latest_root_stop_resumed_with_ranks_writing_at_three(tmp_path, ops):
    """`--keep latest` root writing at 2 ranks stopped after res 1, resumed at 3 ranks with
    `--write ranks`: bit-identical to uninterrupted, or refused with one line."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    opts = ("--planes", "3", "--keep", "latest")
    assert stop_at(out, 1, "matmul", a, b, "-o", out, *opts)[0] == 3
    r = run("matmul", a, b, "-o", out, *opts, "--write", "ranks", "--resume", n=3)
    if r.returncode == 0:
        assert np.array_equal(load(out)[0], ref(tmp_path, a, b, "--planes", "3"))
    else:
        assert_one_error(r, codes=(1, 2))


def test_crt_target_fp32_ranks_writing_equals_root_writing_at_two(tmp_path, ops):
    """`--final crt --target fp32 --write ranks --keep latest` at 2 ranks: C equal to
    root writing alone; bounds never increase (the CRT's bound_rel <= the last layer's)."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    opts = ("--planes", "2", "--final", "crt", "--target", "fp32")
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--write", "ranks", "--keep", "latest",
                  n=2))
    C, at = load(out)
    R = ref(tmp_path, a, b, *opts)
    assert np.array_equal(C, R)
    assert at["bound_rel"] <= 6e-8 or at["method"] == "planes"
