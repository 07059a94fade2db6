"""Fifth adversarial pass, area 6: launch and settings — signals at odd moments (two in a
row, SIGINT then SIGTERM, just as the last resolution is listed, SIGSTOP/SIGCONT of a
worker), a deadline that falls during start-up, settings that conflict with options."""
import os
import signal
import time

import numpy as np

from adversary import (SLOW, assert_ok, assert_one_error, attrs_of, error_lines, kill_group,
                      load, rank_pid, run, save, start, wait_for)


def operands(tmp_path, rng, m=96, k=40, n=24):
    return (save(tmp_path / "A.npy", rng.standard_normal((m, k))),
            save(tmp_path / "B.npy", rng.standard_normal((k, n))))


def slow_job(out, a, b, *extra, n=2, slow="0.5", env=None):
    return start("matmul", a, b, "-o", out, "--planes", "3", *extra, n=n,
                 env={**SLOW, "LRMPI_TEST_SLOW_S": slow, **(env or {})})


def signals_after_first(out, a, b, *signals):
    """A slow 2-rank job sent `signals` back to back once resolution 1 is listed:
    (the finished process, its stderr)."""
    p = slow_job(out, a, b)
    try:
        wait_for(out, 1, p, timeout=90)
        for sig in signals:
            os.killpg(p.pid, sig)
        _, err = p.communicate(timeout=60)
    finally:
        kill_group(p)
    return p, err


def test_two_sigterms_in_a_row(tmp_path, rng):
    """SIGTERM twice, back to back, after resolution 1: one clean stop, exit 3, status
    `deadline`, the listed resolutions load, no traceback."""
    a, b = operands(tmp_path, rng)
    out = str(tmp_path / "C.h5")
    p, err = signals_after_first(out, a, b, signal.SIGTERM, signal.SIGTERM)
    assert p.returncode == 3, (p.returncode, err)
    assert "Traceback" not in err and not error_lines(err), err
    at = attrs_of(out)
    assert at["status"] == "deadline" and at["completed"] >= 1
    load(out)


def test_sigint_then_sigterm(tmp_path, rng):
    """Ctrl-C and, while it stops, SIGTERM: exit 130 (the first stop wins) or 3, no
    traceback, the file `deadline`, what was listed loads."""
    a, b = operands(tmp_path, rng)
    out = str(tmp_path / "C.h5")
    p, err = signals_after_first(out, a, b, signal.SIGINT, signal.SIGTERM)
    assert p.returncode in (130, 3), (p.returncode, err)
    assert "Traceback" not in err, err
    assert attrs_of(out)["status"] == "deadline"
    load(out)


def test_sigterm_as_the_next_to_last_resolution_is_listed(tmp_path, rng):
    """SIGTERM the instant the job file lists resolution 4 of 5: the exit code agrees with
    the file (3 and `deadline`, or 0 and `complete` if the last one won the race)."""
    a, b = operands(tmp_path, rng)
    out = str(tmp_path / "C.h5")
    p = slow_job(out, a, b, slow="0.2")
    try:
        wait_for(out, 4, p, timeout=90)
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        kill_group(p)
    at = attrs_of(out)
    assert "Traceback" not in err, err
    assert (p.returncode, at["status"]) in ((0, "complete"), (3, "deadline")), (p.returncode, at)
    load(out)


def test_sigterm_after_complete_before_exit(tmp_path, rng):
    """A signal that lands after the job file says `complete` but before the process has
    exited (SLURM's USR1 for a job that finishes just before its limit): the result is
    complete on disk, so the exit code is 0 (the table has no "killed by SIGTERM")."""
    import h5py
    a, b = operands(tmp_path, rng)
    out = str(tmp_path / "C.h5")
    p = start("matmul", a, b, "-o", out, "--planes", "3")
    try:
        wait_for(out, 5, p, timeout=90)
        while p.poll() is None:
            try:
                with h5py.File(out, "r") as f:
                    if f.attrs["status"] == "complete":
                        break
            except OSError:
                pass
            time.sleep(0.002)
        while p.poll() is None:                  # until it exits: every instant is covered
            os.kill(p.pid, signal.SIGTERM)
            time.sleep(0.001)
        p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert attrs_of(out)["status"] == "complete"
    assert p.returncode == 0, p.returncode


def test_worker_stopped_and_continued_for_a_few_seconds(tmp_path, rng):
    """SIGSTOP a worker of `mpiexec -n 3` for 3 s, then SIGCONT: the job completes, nobody is
    called hung, and C equals an uninterrupted run's bit for bit."""
    a, b = operands(tmp_path, rng)
    out = str(tmp_path / "C.h5")
    p = start("matmul", a, b, "-o", out, "--planes", "3", n=3,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.3", "ADV_MARK": "adv5stop"})
    try:
        wait_for(out, 1, p, timeout=90)
        pid = rank_pid("adv5stop", 2)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(3)                           # the point of the case: a worker frozen 3 s
        os.kill(pid, signal.SIGCONT)
        _, err = p.communicate(timeout=120)
    finally:
        kill_group(p)
    assert p.returncode == 0, err
    assert "hung" not in err.lower(), err
    assert_ok(run("matmul", a, b, "-o", tmp_path / "R.h5", "--planes", "3"))
    assert np.array_equal(load(out)[0], load(tmp_path / "R.h5")[0])


def test_deadline_falling_during_start_up(tmp_path, rng):
    """`--deadline @EPOCH` a moment after launch, under `mpiexec -n 3` (start-up takes
    about as long): refused as past (2), or stopped with nothing (4), or with something (3),
    or done (0): the code agrees with what is on disk, never a hang or a traceback."""
    a, b = operands(tmp_path, rng, 400, 200, 300)
    for i, ahead in enumerate((0.5, 1.5, 3.0)):
        out = tmp_path / f"C{i}.h5"
        r = run("matmul", a, b, "-o", out, "--planes", "4", "--margin", "0",
                "--deadline", f"@{time.time() + ahead:.3f}", n=3, timeout=60)
        assert "Traceback" not in r.stderr, r.stderr
        assert r.returncode in (0, 2, 3, 4), (r.returncode, r.stderr)
        if r.returncode == 2:
            assert_one_error(r, code=2, contains=("deadline",))
            assert not out.exists()
        elif r.returncode == 4:
            assert not out.exists() or attrs_of(out)["completed"] == 0
        else:
            at = attrs_of(out)
            assert at["completed"] >= 1
            assert at["status"] == ("complete" if r.returncode == 0 else "deadline")
            load(out)


def test_worker_timeout_option_wins_over_hang_settings(tmp_path, rng):
    """LRMPI_HANG_FIRST_S=1 and LRMPI_HANG_MIN_S=1 with a worker that sleeps 2 s per task:
    `--worker-timeout 60` overrides them (README: "--worker-timeout overrides"), so the job
    completes."""
    a, b = operands(tmp_path, rng, 40, 16, 8)
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "1", "--worker-timeout", "60", n=2,
            env={**SLOW, "LRMPI_TEST_SLOW_S": "2", "LRMPI_HANG_FIRST_S": "1",
                 "LRMPI_HANG_MIN_S": "1", "LRMPI_TILES_PER_WORKER": "1"}, timeout=120)
    assert_ok(r)
    assert attrs_of(out)["status"] == "complete"


def test_hang_setting_applies_without_the_option(tmp_path, rng):
    """The same slow worker without `--worker-timeout`, LRMPI_HANG_FIRST_S=1: the setting
    applies, the job ends non-zero within seconds naming rank 1, the file says failed."""
    a, b = operands(tmp_path, rng, 40, 16, 8)
    out = tmp_path / "C.h5"
    t0 = time.time()
    r = run("matmul", a, b, "-o", out, "--planes", "1", n=2,
            env={**SLOW, "LRMPI_TEST_SLOW_S": "20", "LRMPI_HANG_FIRST_S": "1",
                 "LRMPI_STOP_TIMEOUT_S": "1", "LRMPI_TILES_PER_WORKER": "1"}, timeout=120)
    assert time.time() - t0 < 18, r.stderr
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "1" in " ".join(error_lines(r.stderr)), r.stderr
    assert attrs_of(out)["status"] == "failed"


def test_margin_option_checked_whatever_the_margin_settings(tmp_path, rng):
    """LRMPI_MAX_MARGIN_S=0 and LRMPI_MARGIN_FRACTION=0 do not make a `--margin` that leaves
    no time acceptable: `--deadline 5 --margin 6` is one line, exit 2, under `-n 2`."""
    a, b = operands(tmp_path, rng, 8, 4, 3)
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--deadline", "5", "--margin", "6", n=2,
            env={"LRMPI_MAX_MARGIN_S": "0", "LRMPI_MARGIN_FRACTION": "0"})
    assert_one_error(r, code=2, contains=("margin",))
    assert not (tmp_path / "C.h5").exists()


def test_bad_setting_and_bad_option_together_one_line(tmp_path, rng):
    """A bad setting and a bad option at once, under `mpiexec -n 3`: exactly one line
    (either), exit 2, nothing written."""
    a, b = operands(tmp_path, rng, 8, 4, 3)
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "99", n=3,
            env={"LRMPI_DEPTH": "0"})
    assert_one_error(r, code=2)
    assert not (tmp_path / "C.h5").exists()
