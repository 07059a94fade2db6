"""Second adversarial pass, area 6: launch and settings — signals to one rank or to the
launcher, every stop signal, settings at the edges of their ranges, the stats file, a full
stdout, deadlines and margins at their edges."""
import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

from adversary import (PY, SLOW, assert_ok, assert_one_error, attrs_of, digest, kill_group,
                      load, mlp_onnx, rank_pid, run, save, start, wait_for)


def _slow_job(out, a, b, n, mark, slow="0.5", planes="2", extra=()):
    return start("matmul", a, b, "-o", out, "--planes", planes, *extra, n=n,
                 env={"ADV_MARK": mark, **SLOW, "LRMPI_TEST_SLOW_S": slow})


def test_sigusr2_to_the_root_rank_under_mpiexec_stops_with_exit_3(tmp_path, ops):
    """SIGUSR2 stops a job (README); MPICH's Hydra does not forward it (`kill -USR2
    <mpiexec>` ends mpiexec itself, found by this pass: the README now says so, and to
    signal the root rank, or use USR1/TERM/INT through mpiexec). Sent to rank 0 after
    resolution 1: exit 3, status deadline, the message naming SIGUSR2."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    p = _slow_job(out, a, b, 2, "u2")
    _usr2_stops(p, out, lambda: rank_pid("u2", 0))


def test_sigusr2_single_process_exit_3(tmp_path, ops):
    """One process (no launcher), rank 0 slowed by the test hook: SIGUSR2 after resolution 1
    gives exit 3, status deadline, message naming SIGUSR2."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    p = start("matmul", a, b, "-o", out, "--planes", "2",
              env={"LRMPI_TEST_SLOW_RANK": "0", "LRMPI_TEST_SLOW_S": "0.5"})
    _usr2_stops(p, out, lambda: p.pid)


def _usr2_stops(p, out, root_pid):
    """SIGUSR2 to the root process once resolution 1 is listed: exit 3, status deadline,
    the message naming SIGUSR2."""
    try:
        wait_for(out, 1, p)
        os.kill(root_pid(), signal.SIGUSR2)
        _, err = p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert p.returncode == 3, err
    at = attrs_of(out)
    assert at["status"] == "deadline" and "USR2" in str(at["message"]), at["message"]


def test_sigterm_to_one_worker_is_ignored(tmp_path, ops):
    """SIGTERM to worker rank 2 alone at -n 3 (README: workers ignore the stop signals and
    wait for the root): the job completes, exit 0, equal to an undisturbed run."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    p = _slow_job(out, a, b, 3, "w2", slow="0.3")
    try:
        pid = rank_pid("w2", 2)
        wait_for(out, 1, p)
        os.kill(pid, signal.SIGTERM)
        _, err = p.communicate(timeout=90)
    finally:
        kill_group(p)
    assert p.returncode == 0, err
    assert attrs_of(out)["status"] == "complete"
    assert_ok(run("matmul", a, b, "-o", tmp_path / "ref.h5", "--planes", "2"))
    assert np.array_equal(load(out)[0], load(tmp_path / "ref.h5")[0])


def test_sigterm_to_root_rank_only(tmp_path, ops):
    """SIGTERM to rank 0's process (not to mpiexec) at -n 3: the job ends within seconds,
    exit 3 (through the launcher), status deadline, no rank left running."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    p = _slow_job(out, a, b, 3, "r0", slow="0.5")
    try:
        pids = [rank_pid("r0", r) for r in range(3)]
        wait_for(out, 1, p)
        t = time.monotonic()
        os.kill(pids[0], signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert time.monotonic() - t < 15
    finally:
        kill_group(p)
    assert p.returncode == 3, err
    assert attrs_of(out)["status"] == "deadline"
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_sigint_at_three_ranks_exit_130(tmp_path, ops):
    """SIGINT to the job's group at -n 3 after resolution 1: exit 130, status deadline with
    message interrupted, resolution 1 readable."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    p = _slow_job(out, a, b, 3, "si")
    try:
        wait_for(out, 1, p)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert p.returncode == 130, err
    at = attrs_of(out)
    assert at["status"] == "deadline" and "interrupted" in str(at["message"])
    with h5py.File(out, "r") as f:
        assert np.isfinite(f["resolutions/001/C"][()]).all()


def test_settings_at_their_upper_edges_bit_identical(tmp_path, ops):
    """LRMPI_DEPTH=1024, LRMPI_LOOKAHEAD=1024, LRMPI_WRITE_QUEUE=1, LRMPI_WRITER_NICE=19,
    LRMPI_MARGIN_FRACTION=0.9, LRMPI_MEMORY_FRACTION=1, LRMPI_ROOT_COMPUTES=yes at -n 3:
    completes, equal to the defaults."""
    a, b, _, _ = ops
    env = {"LRMPI_DEPTH": "1024", "LRMPI_LOOKAHEAD": "1024", "LRMPI_WRITE_QUEUE": "1",
           "LRMPI_WRITER_NICE": "19", "LRMPI_MARGIN_FRACTION": "0.9",
           "LRMPI_MEMORY_FRACTION": "1", "LRMPI_ROOT_COMPUTES": "yes",
           "LRMPI_LOG_LEVEL": "debug"}
    assert run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "3", "--deadline", "10m",
               n=3, env=env).returncode == 0
    assert_ok(run("matmul", a, b, "-o", tmp_path / "ref.h5", "--planes", "3"))
    assert np.array_equal(load(tmp_path / "C.h5")[0], load(tmp_path / "ref.h5")[0])


@pytest.mark.parametrize("var,value", [
    ("LRMPI_TILES_PER_WORKER", "65537"), ("LRMPI_WRITER_NICE", "-21"),
    ("LRMPI_MEMORY_FRACTION", "1.01"), ("LRMPI_BOUND_F64", "2"), ("LRMPI_MARGIN_FRACTION", "-0.1"),
    ("LRMPI_BACKUP_MIN_S", "-1"), ("LRMPI_TEST_FAIL_AFTER", "0"), ("LRMPI_CHUNK_COLS", "16777217"),
    ("LRMPI_STOP_TIMEOUT_S", "0"), ("LRMPI_BOUND_BUDGET", "-0.5"),
    ("LRMPI_LOG_LEVEL", "INFO2"), ("LRMPI_WRITE_QUEUE", "1.0")])
def test_settings_just_past_their_edges_refused(tmp_path, ops, var, value):
    """Each value just outside the table's range: exit 2 at -n 2, one line naming it, no
    output."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", n=2, env={var: value}, timeout=60)
    # the STOP timeout's own description names MPI_Abort: not an abort
    assert_one_error(r, code=2, contains=(var,), abort_ok=var == "LRMPI_STOP_TIMEOUT_S")
    assert not (tmp_path / "C.h5").exists()


# found by the second adversarial pass (fixed: refused at start)
def test_stats_file_naming_the_output(tmp_path, ops):
    """LRMPI_STATS_FILE set to the -o path: refused at start, or the checkpoint survives
    (exit 0 means a result of these inputs is on disk)."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    r = run("matmul", a, b, "-o", out, "--planes", "1", env={"LRMPI_STATS_FILE": out})
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    C, _ = load(out)
    assert C.shape == (40, 16)


# found by the second adversarial pass (fixed: refused at start)
def test_stats_file_naming_an_input(tmp_path, ops):
    """LRMPI_STATS_FILE set to the operand B.npy: refused at start, or B.npy left intact."""
    a, b, _, _ = ops
    before = digest(b)
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "1",
            env={"LRMPI_STATS_FILE": b})
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
    assert digest(b) == before


def test_stats_file_in_missing_folder_does_not_fail_job(tmp_path, ops):
    """LRMPI_STATS_FILE in a folder that does not exist: the job still completes (exit 0,
    result on disk) or is refused with one line; never a traceback."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "1", n=2,
            env={"LRMPI_STATS_FILE": str(tmp_path / "no" / "such" / "s.json")})
    assert "Traceback" not in r.stderr
    if r.returncode == 0:
        assert attrs_of(out)["status"] == "complete"
    else:
        assert_one_error(r, codes=(1, 2))


def test_cache_dir_is_a_regular_file(tmp_path, rng):
    """LRMPI_CACHE_DIR naming a regular file: infer completes (no cache) or one line; the
    file left as it was."""
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    d = save(tmp_path / "d.npy", rng.standard_normal((4, 16)).astype(np.float32))
    cache = tmp_path / "cachefile"
    cache.write_text("mine")
    r = run("infer", model, d, "-o", tmp_path / "s.h5", "--planes", "2",
            env={"LRMPI_CACHE_DIR": str(cache)})
    assert "Traceback" not in r.stderr
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
    assert cache.read_text() == "mine"


def test_stdout_to_dev_full_job_completes(tmp_path, ops):
    """stdout and stderr on /dev/full (every write fails with ENOSPC): the job still runs to
    the end, exit 0, the checkpoint complete."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    with open("/dev/full", "w") as full:
        r = subprocess.run([PY, "-m", "lrmpi", "matmul", a, b, "-o", str(out), "--planes", "2"],
                           stdout=full, stderr=full, timeout=60)
    assert r.returncode == 0
    assert attrs_of(out)["status"] == "complete"


@pytest.mark.parametrize("when", ["epoch", "iso"])
def test_deadline_as_absolute_time_in_an_hour(tmp_path, ops, when):
    """--deadline @EPOCH and an ISO local time an hour ahead: accepted, job completes."""
    a, b, _, _ = ops
    t = time.time() + 3600
    value = f"@{int(t)}" if when == "epoch" else time.strftime("%Y-%m-%dT%H:%M:%S",
                                                               time.localtime(t))
    assert_ok(run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "1", "--deadline", value))


@pytest.mark.parametrize("args", [["--margin", "1e309"], ["--margin", "-0.0001"],
                                  ["--deadline", "1-"], ["--deadline", "1:2:3:4"],
                                  ["--deadline", "-1-0"], ["--deadline", "@abc"],
                                  ["--max-restarts", "1.5"], ["--worker-timeout", "inf"]])
def test_deadline_margin_edges_refused(tmp_path, ops, args):
    """An infinite or negative margin, malformed SLURM forms, a non-numeric epoch, a
    fractional restart count, an infinite worker timeout: exit 2, one line, no output."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", *args)
    assert_one_error(r, code=2)
    assert not (tmp_path / "C.h5").exists()


def test_short_deadline_beats_far_slurm_end_time(tmp_path, ops):
    """--deadline 3 inside a SLURM job ending in a day, with a slow worker: the job stops by
    its own deadline within seconds (exit 3 or 4 by what is on disk)."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    t = time.monotonic()
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--deadline", "3", n=2,
            env={**SLOW, "LRMPI_TEST_SLOW_S": "1.0", "SLURM_JOB_ID": "77",
                 "SLURM_JOB_END_TIME": str(int(time.time()) + 86400),
                 "PATH": f"{tmp_path}:{os.environ['PATH']}"}, timeout=60)
    assert time.monotonic() - t < 15
    assert r.returncode in (3, 4), r.stderr
    assert attrs_of(out)["status"] == "deadline"
