"""Area 6: launch and settings — mpiexec -n 1..3, the LRMPI_* table, deadlines."""
import os
import signal
import time

import numpy as np
import pytest

from adversary import assert_ok, assert_one_error, attrs_of, kill_group, load, run, start


@pytest.mark.parametrize("var,value", [
    ("LRMPI_DEPTH", "1025"), ("LRMPI_LOOKAHEAD", "2.5"), ("LRMPI_BACKUP_FACTOR", "0.5"),
    ("LRMPI_MARGIN_FRACTION", "0.95"), ("LRMPI_WRITER_NICE", "20"), ("LRMPI_HANG_MIN_S", "inf"),
    ("LRMPI_HANG_FACTOR", "nan"), ("LRMPI_ROOT_COMPUTES", "maybe"), ("LRMPI_TILES_PER_WORKER", " "),
    ("LRMPI_SLURM_TIMEOUT_S", "1e400"), ("LRMPI_TEST_SLOW_S", "3601"), ("LRMPI_DEPTH", "0x10"),
    ("LRMPI_KERNEL", "AMX "), ("LRMPI_PROBE_TIMEOUT_S", "-0")])
def test_setting_out_of_range_ends_every_rank(tmp_path, ops, var, value):
    """Each setting outside its table range: exit 2 at -n 3 within 10 s, one line naming it."""
    a, b, _, _ = ops
    t = time.monotonic()
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", n=3, env={var: value}, timeout=60)
    assert time.monotonic() - t < 10 + 5   # launcher start-up on a shared machine
    assert_one_error(r, code=2, contains=(var,))
    assert not (tmp_path / "C.h5").exists()


def test_unknown_lrmpi_variable_ignored(tmp_path, ops):
    """A variable outside the table (LRMPI_A, a job script's own) is not refused."""
    a, b, _, _ = ops
    assert_ok(run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "1",
                  env={"LRMPI_A": "x.npy", "LRMPI_OPTIONS": "--bogus", "LRMPI_FOO": "1"}))


def test_bit_identical_across_ranks_and_tiling_settings(tmp_path, ops):
    """-n 1, 2, 3 with odd tilings (1-row tiles, 1-column chunks, root computing or not):
    every resolution bit-identical."""
    a, b, _, _ = ops
    variants = [(None, {}), (2, {"LRMPI_MIN_TILE_ROWS": "1", "LRMPI_TILES_PER_WORKER": "64"}),
                (3, {"LRMPI_CHUNK_COLS": "1", "LRMPI_DEPTH": "1", "LRMPI_LOOKAHEAD": "1"}),
                (3, {"LRMPI_ROOT_COMPUTES": "yes", "LRMPI_MIN_TILE_ROWS": "3"}),
                (2, {"LRMPI_KERNEL": "ref", "LRMPI_BOUND_ROW_BLOCK": "1"})]
    Cs = []
    for i, (n, env) in enumerate(variants):
        out = tmp_path / f"C{i}.h5"
        assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", n=n, env=env))
        Cs.append(load(out))
    for C, attrs in Cs[1:]:
        assert np.array_equal(C, Cs[0][0])
        assert attrs["bound_abs"] == Cs[0][1]["bound_abs"]


def test_root_computes_no_alone(tmp_path, ops):
    """LRMPI_ROOT_COMPUTES=no with one rank (nobody to compute): completes or one line
    within a few seconds — never a wait for workers that do not exist."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "1", "--deadline", "20",
            env={"LRMPI_ROOT_COMPUTES": "no"}, timeout=40)
    if r.returncode != 0:
        assert_one_error(r, code=2)


def test_log_level_lowercase_quiet(tmp_path, ops):
    """LRMPI_LOG_LEVEL=error (any case): no resolution lines, still exit 0; an error still
    prints its one line."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "1",
            env={"LRMPI_LOG_LEVEL": "error"})
    assert_ok(r)
    assert "resolution" not in r.stderr
    r = run("matmul", a, "missing.npy", env={"LRMPI_LOG_LEVEL": "critical"}, cwd=tmp_path)
    assert_one_error(r, code=1)


@pytest.mark.parametrize("deadline", ["0", "0:0", "-5", "5 m", "1h-30m", "90x", "@0", "nan",
                                      "2020-01-01T00:00", "1e400", "0-0", "25:99:99:99", "3 s",
                                      "1-", "+inf"])
def test_deadline_refused(tmp_path, ops, deadline):
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--deadline", deadline, n=2)
    assert_one_error(r, code=2)
    assert not (tmp_path / "C.h5").exists()


@pytest.mark.parametrize("deadline", ["1-0", "0:90", "1:00:00", "2d", "1h30m", "90s", "600"])
def test_deadline_accepted(tmp_path, ops, deadline):
    a, b, _, _ = ops
    assert_ok(run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "1", "--deadline", deadline))


def test_margin_eats_all_time(tmp_path, ops):
    """--deadline 5 --margin 5 (or more): refused with one line (it leaves no time)."""
    a, b, _, _ = ops
    for m in ("5", "6", "1e9"):
        r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--deadline", "5", "--margin", m)
        assert_one_error(r, code=2)


def test_slurm_end_time_past_stops_at_once_exit_4(tmp_path, ops):
    """SLURM_JOB_END_TIME in the past: the job stops at once with nothing of these inputs on
    disk: exit 4 (also with --deadline-ok), never 0; under -n 3 every rank ends."""
    a, b, _, _ = ops
    env = {"SLURM_JOB_ID": "999999", "SLURM_JOB_END_TIME": str(int(time.time()) - 60),
           "PATH": os.path.dirname(os.sys.executable) + ":/usr/bin:/bin"}
    for extra in ((), ("--deadline-ok",)):
        out = tmp_path / f"C{len(extra)}.h5"
        r = run("matmul", a, b, "-o", out, *extra, n=3, env=env, timeout=60)
        assert r.returncode == 4, (r.returncode, r.stderr)
        assert "Traceback" not in r.stderr


def test_slurm_end_time_earlier_than_deadline_wins(tmp_path, ops):
    """--deadline 1h inside a SLURM job ending in 4 s with a slow job: the job stops by the
    SLURM end time (exit 3 or 4 within ~4 s + start-up), not after an hour."""
    a, b, _, _ = ops
    env = {"SLURM_JOB_ID": "999999", "SLURM_JOB_END_TIME": str(int(time.time()) + 6),
           "LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "2", "LRMPI_ROOT_COMPUTES": "no"}
    t = time.monotonic()
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "4", "--deadline", "1h",
            n=2, env=env, timeout=60)
    assert r.returncode in (3, 4), (r.returncode, r.stderr)
    assert time.monotonic() - t < 20


# found by the adversarial pass: the slow rank's injected sleep ignored the stop (10 s,
# then MPI_Abort, exit 1); a slow task now stops like a real one between its chunks
def test_sigterm_before_first_resolution_exit_4(tmp_path, ops):
    """SIGTERM while the only worker is inside a long task of resolution 1 (the test hook's
    30 s sleep; seen in /proc as a process asleep, using no CPU): exit 4, status deadline,
    every rank gone within 2 s of the signal (+ slack for the shared machine)."""
    import uuid
    from adversary import rank_pid, wait_asleep
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    mark = uuid.uuid4().hex
    p = start("matmul", a, b, "-o", out, "--planes", "3", n=2,
              env={"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "30", "ADV_MARK": mark,
                   "LRMPI_ROOT_COMPUTES": "no", "LRMPI_MIN_TILE_ROWS": "1000"})
    try:
        wait_asleep(rank_pid(mark, 1))
        os.killpg(p.pid, signal.SIGTERM)
        t = time.monotonic()
        _, err = p.communicate(timeout=30)
        took = time.monotonic() - t
    finally:
        kill_group(p)
    assert p.returncode == 4, (p.returncode, err)
    assert took < 5, took
    assert attrs_of(out)["status"] == "deadline"


def test_worker_timeout_values(tmp_path, ops):
    a, b, _, _ = ops
    for v in ("0", "-1", "abc", "nan"):
        r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--worker-timeout", v)
        assert_one_error(r, code=2)


def test_hung_worker_named_by_worker_timeout(tmp_path, ops):
    """A worker that hangs on its first task with --worker-timeout 2 at -n 3: the job ends by
    itself, one line naming the rank, the file marked failed naming it. The exit code is
    the launcher's once the root calls MPI_Abort (README, "exit codes"): Hydra returns 1,
    or 9 when it reports the hung rank's SIGKILL first (about one run in four here)."""
    a, b, _, _ = ops
    t = time.monotonic()
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--worker-timeout", "2", n=3,
            env={"LRMPI_TEST_HANG_RANK": "2", "LRMPI_ROOT_COMPUTES": "no",
                 "LRMPI_MIN_TILE_ROWS": "1", "LRMPI_BACKUP_MIN_S": "1000"}, timeout=90)
    assert time.monotonic() - t < 40
    err = assert_one_error(r, codes=(1, 9), abort_ok=True)
    assert "worker 2" in err
    attrs = attrs_of(out)
    assert attrs["status"] == "failed" and "worker 2" in attrs["message"], attrs


def test_raising_worker_at_later_task_keeps_earlier_resolutions(tmp_path, ops):
    """A worker that raises on its 3rd task: exit 1, status failed, and every resolution
    listed before still loads."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "3", n=2,
            env={"LRMPI_TEST_FAIL_RANK": "1", "LRMPI_TEST_FAIL_AFTER": "3",
                 "LRMPI_ROOT_COMPUTES": "no"}, timeout=90)
    assert_one_error(r, code=1)
    assert attrs_of(out)["status"] == "failed"
    if attrs_of(out)["completed"] > 0:
        load(out)


def test_requeue_outside_slurm_calls_nothing(tmp_path, ops):
    """--requeue without SLURM_JOB_ID, stopped by its deadline: no `scontrol` call (a fake
    one first on PATH records any), exit 3 or 4."""
    a, b, _, _ = ops
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("scontrol", "squeue"):
        (fake / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> {log}\nexit 1\n')
        (fake / tool).chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "LRMPI_TEST_SLOW_RANK": "1",
           "LRMPI_TEST_SLOW_S": "1.5", "LRMPI_ROOT_COMPUTES": "no"}
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "3", "--requeue",
            "--deadline", "5", "--margin", "1", n=2,
            unset=[k for k in os.environ if k.startswith("SLURM_")], env=env)
    assert r.returncode in (2, 3, 4), r.stderr
    assert not log.exists() or "scontrol" not in log.read_text(), log.read_text()
