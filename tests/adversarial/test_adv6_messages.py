"""Sixth adversarial pass, area 8: messages — `inspect --status` of jobs in every state
(preparing, killed while preparing, stopped while preparing, failed, an `--overwrite`
running over a complete result, a packed file, a missing file). The README: `--status`
prints the status word only (running, complete, deadline, failed; killed: the file says
running but no job is writing it)."""
import os
import signal
import time

import h5py

from adversary import (assert_ok, assert_one_error, kill_group, run, start)

WORDS = {"running", "complete", "deadline", "failed", "killed"}


def status(out):
    r = run("inspect", out, "--status")
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _wait_file(out, proc, timeout=60):
    """Until the job file exists and says `running` (never a fixed sleep)."""
    limit = time.time() + timeout
    while time.time() < limit:
        assert proc.poll() is None, proc.communicate()
        try:
            with h5py.File(out, "r") as f:
                if f.attrs.get("status") == "running":
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError("no job file")


def _preparing(tmp_path, tiny):
    m1, _, data, _ = tiny
    out = tmp_path / "s.h5"
    p = start("infer", m1, data, "-o", out, "--planes", "2",
              env={"LRMPI_TEST_SLOW_PREPARE_S": "60"})
    _wait_file(out, p)
    return out, p


def test_status_while_preparing_then_killed(tmp_path, tiny):
    """An inference job preparing its model: `running`; SIGKILLed: `killed`; both exit 0
    and print exactly the word."""
    out, p = _preparing(tmp_path, tiny)
    try:
        r = status(out)
        assert r.returncode == 0 and r.stdout.strip() == "running", r.stdout + r.stderr
    finally:
        kill_group(p)
    r = status(out)
    assert r.returncode == 0 and r.stdout.strip() == "killed", r.stdout + r.stderr


def test_status_after_a_stop_while_preparing(tmp_path, tiny):
    """SIGTERM while preparing: exit 4, and `--status` says `deadline`; `inspect` (the
    table) runs without a traceback and names the phase."""
    out, p = _preparing(tmp_path, tiny)
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert p.returncode == 4
    r = status(out)
    assert r.returncode == 0 and r.stdout.strip() == "deadline", r.stdout + r.stderr
    full = run("inspect", out)
    assert "Traceback" not in full.stderr
    assert "prepar" in (full.stdout + full.stderr).lower(), full.stdout + full.stderr


def test_status_of_a_failed_job(tmp_path, ops):
    """A worker that raises on its second task under `mpiexec -n 2`: exit 1 and `failed`."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "3", n=2,
            env={"LRMPI_TEST_FAIL_RANK": "1", "LRMPI_TEST_FAIL_AFTER": "2",
                 "LRMPI_ROOT_COMPUTES": "no"})
    assert r.returncode != 0
    s = status(out)
    assert s.returncode == 0 and s.stdout.strip() == "failed", s.stdout + s.stderr


def test_status_during_an_overwrite_of_a_complete_result(tmp_path, done):
    """An `--overwrite` (same inputs, slow worker) running over a complete result: the
    status is one of the words, never `killed` while the job runs; after the job it is
    `complete`."""
    from adversary import SLOW
    out, a, b, _, _ = done
    p = start("matmul", a, b, "-o", out, "--planes", "2", "--overwrite", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.5"})
    try:
        limit = time.time() + 60
        while not os.path.exists(out + ".d/.lock") and p.poll() is None:
            assert time.time() < limit
            time.sleep(0.01)
        seen = set()
        while p.poll() is None:
            r = status(out)
            if p.poll() is not None:
                break
            word = r.stdout.strip()
            assert word in WORDS - {"killed", "failed", "deadline"}, (word, r.stderr)
            seen.add(word)
        p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert p.returncode == 0
    assert status(out).stdout.strip() == "complete"


def test_status_of_a_packed_file_and_of_nothing(tmp_path, done):
    """`--status` of `pack`'s one file is `complete`; of a missing file and of a `.npy`
    operand: one `lrmpi: error` line, exit 1, nothing on stdout."""
    out, a, _, _, _ = done
    packed = tmp_path / "ONE.h5"
    assert_ok(run("pack", out, packed))
    r = status(packed)
    assert r.returncode == 0 and r.stdout.strip() == "complete", r.stdout + r.stderr
    for path in (tmp_path / "missing.h5", a):
        r = status(path)
        assert r.stdout.strip() == ""
        assert_one_error(r, code=1)


def test_status_of_a_stopped_keep_latest_ranks_job(tmp_path, ops):
    """A `--keep latest --write ranks` job stopped by SIGTERM after its first resolution
    under `mpiexec -n 3`: `deadline`; after `--resume` to the end: `complete`."""
    from adversary import stop_after
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3", "--keep",
                         "latest", "--write", "ranks", n=3)
    assert rc == 3, err
    assert status(out).stdout.strip() == "deadline"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--keep", "latest", "--write",
                  "ranks", "--resume", n=3))
    assert status(out).stdout.strip() == "complete"
