"""The real CLI through mpiexec: results, exit codes, errors, deadlines, failures."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from launching import (finish, kill_tree, mpiexec, open_mpi, rank_pid, run, since_start,
                       start, wait_for_resolutions)

from lrmpi import LayeredMatmul
from lrmpi.jobs.checkpoint import Checkpoint


@pytest.mark.parametrize("n", [2, 3])
def test_mpiexec_gives_the_world_size_asked_for(n):
    code = ("import sys; from mpi4py import MPI; c = MPI.COMM_WORLD; "
            "sys.stdout.write(f'rank={c.Get_rank()} size={c.Get_size()}\\n')")
    p = subprocess.run([mpiexec(), "-n", str(n), sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert sorted(re.findall(r"rank=(\d+) size=(\d+)", p.stdout)) == \
        [(str(r), str(n)) for r in range(n)]


def test_root_bytes_do_not_grow_with_the_workers(tmp_path):
    """B's planes travel by broadcast: per resolution the root sends about the same
    bytes to 8 workers as to 2 (point to point it sent one copy of B per worker),
    and the result stays bit-identical."""
    rng = np.random.default_rng(8)
    # 2048 rows: 4 tiles of >= 64 rows per worker at 8 workers (with fewer tiles than
    # two per worker the scheduler pipelines resolutions across workers instead)
    A, B = rng.standard_normal((2048, 384)), rng.standard_normal((384, 256))
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "b.npy", B)
    sent, ref = {}, list(LayeredMatmul(A, B, planes=3))
    for n in (3, 9):  # 2 and 8 workers (oversubscribed: bytes do not depend on speed)
        out = tmp_path / f"c{n}.h5"
        p = run("matmul", tmp_path / "a.npy", tmp_path / "b.npy", "-o", out, "--planes", 3,
                n=n, env={"LRMPI_BACKUP_MIN_S": "60", "LRMPI_ROOT_COMPUTES": "no"},
                timeout=180)
        assert p.returncode == 0, p.stderr
        ck = Checkpoint(out)
        sent[n] = [ck.resolution_summary(r.index)["root_bytes_sent"] for r in ref]
        for r in ref:
            np.testing.assert_array_equal(ck.resolution(r.index)[1]["C"], r.C)
    assert sum(sent[9]) <= 1.5 * sum(sent[3]), sent
    # resolution 1: A's first plane once and B's once (point to point: 8 copies of
    # B's); later ones may move a few tiles to balance the load (8 ranks on 2 cores)
    assert sent[9][0] == sent[3][0] == A.size + B.size, sent


@pytest.mark.parametrize("n", [1, 2, 3])
def test_matmul_cli_writes_every_resolution_identical_to_the_api(n, operands, tmp_path):
    A, B, a, b = operands
    out = tmp_path / "c.h5"
    p = run("matmul", a, b, "-o", out, "--planes", 3, n=n)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("lrmpi: resolution") == 5  # one log line per resolution, root only
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "complete" and ck.attrs["ranks"] == n
    for r in LayeredMatmul(A, B, planes=3):
        np.testing.assert_array_equal(ck.resolution(r.index)[1]["C"], r.C)
    shown = run("inspect", out)
    assert shown.returncode == 0 and "status=complete completed=5/5" in shown.stdout


def test_inspect_plot(operands, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, a, b = operands
    assert run("matmul", a, b, "-o", tmp_path / "c.h5").returncode == 0
    p = run("inspect", tmp_path / "c.h5", "--plot", tmp_path / "p.png")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_usage_error_prints_once_under_mpiexec():
    p = run("matmul", "--planes", n=3)
    assert p.returncode == 2
    assert p.stderr.count("usage:") == 1


def test_bad_input_under_mpiexec_is_one_line_and_ends_every_rank(operands, tmp_path):
    _, _, a, _ = operands
    t = time.time()
    p = run("matmul", a, a, "-o", tmp_path / "c.h5", n=3, timeout=30)
    assert time.time() - t < 10
    assert p.returncode == 1
    assert "lrmpi: error: shape mismatch: A is 160x96, B is 160x96" in p.stderr
    assert p.stderr.count("lrmpi: error") == 1 and "Traceback" not in p.stderr
    assert not (tmp_path / "c.h5").exists()


def test_demo_under_mpiexec():
    p = run("demo", "--n", 96, "--planes", 3, n=3)
    assert p.returncode == 0, p.stderr
    assert "3 rank(s)" in p.stdout and p.stdout.count("lrmpi demo") == 1


# --- deadlines and signals ---

# the root computes beside one worker on 2 cores (-n 2) unless told not to: these jobs
# must be slow, so every task goes to the slowed worker
SLOW = {"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "0.05",
        "LRMPI_ROOT_COMPUTES": "no"}


def long_job(a, b, out, n=2, extra=()):
    """About 64 x 0.05 s on the slowed worker: long enough to be interrupted."""
    return start("matmul", a, b, "-o", out, "--planes", 8, "--order", "pairwise", *extra, n=n,
                 env=SLOW if n > 1 else {**SLOW, "LRMPI_TEST_SLOW_RANK": "0"})


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_stop_signal_saves_the_best_resolution_and_exits_3(sig, operands, tmp_path):
    _, _, a, b = operands
    out = tmp_path / "c.h5"
    proc = long_job(a, b, out)
    try:
        wait_for_resolutions(out, 2, proc)
        proc.send_signal(sig)  # to mpiexec, which forwards it to every rank
        rc, err = finish(proc, 15)
    finally:
        kill_tree(proc)
    # Open MPI's mpiexec forwards USR1 (lrmpi's exit code passes) but answers SIGTERM
    # itself: it sends SIGTERM to the ranks, which stop as under Hydra, and exits 1
    assert rc == (1 if open_mpi() and sig == signal.SIGTERM else 3), err
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "deadline" and ck.attrs["completed"] >= 2
    assert signal.Signals(sig).name in ck.attrs["message"]
    ck.resolution(ck.attrs["completed"])


def test_deadline_2s_on_a_longer_job(operands, tmp_path):
    _, _, a, b = operands
    out = tmp_path / "c.h5"
    p = run("matmul", a, b, "-o", out, "--planes", 8, "--order", "pairwise", "--deadline", "2s",
            n=2, env={**SLOW, "LRMPI_TEST_SLOW_S": "0.1"}, timeout=60)
    took = since_start(out)  # the deadline counts from the job's start, not the launch
    assert p.returncode == 3, p.stderr
    assert took < 5
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "deadline" and 1 <= ck.attrs["completed"] < 64
    assert "deadline reached" in ck.attrs["message"]


def test_deadline_in_the_past_is_refused(operands):
    _, _, a, b = operands
    p = run("matmul", a, b, "--deadline", "2020-01-01T00:00")
    assert p.returncode == 2 and "is already past" in p.stderr


# --- failures ---

def test_worker_exception_ends_the_job_with_a_clear_message(operands, tmp_path):
    _, _, a, b = operands
    out = tmp_path / "c.h5"
    p = run("matmul", a, b, "-o", out, "--planes", 6, "--order", "pairwise", n=3,
            env={"LRMPI_TEST_FAIL_RANK": "2", "LRMPI_TEST_FAIL_AFTER": "4"}, timeout=60)
    assert since_start(out) < 10
    assert p.returncode == 1
    assert "lrmpi: error: worker 2 of 3 on" in p.stderr and "injected failure" in p.stderr
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "failed" and "worker 2 of 3" in ck.attrs["message"]
    for i in ck.resolution_indices():
        ck.resolution(i)


def test_killed_worker_ends_the_job_and_keeps_the_checkpoint(operands, tmp_path):
    A, B, a, b = operands
    out = tmp_path / "c.h5"
    proc = long_job(a, b, out, n=3)
    try:
        wait_for_resolutions(out, 2, proc)
        worker = rank_pid(proc, 1)
        t = time.time()
        os.kill(worker, signal.SIGKILL)
        rc, err = finish(proc, 10)
        assert time.time() - t < 10
    finally:
        kill_tree(proc)
    assert rc != 0
    ck = Checkpoint(out)
    ref = list(LayeredMatmul(A, B, planes=8, order="pairwise"))
    assert ck.attrs["completed"] >= 2
    for i in ck.resolution_indices():
        np.testing.assert_array_equal(ck.resolution(i)[1]["C"], ref[i - 1].C)


def test_hung_worker_ends_the_job_promptly_naming_it(operands, tmp_path):
    """A hung worker is failed by --worker-timeout, or, when backup tasks on the
    other workers finished every resolution first, named when it does not stop."""
    A, B, a, b = operands
    out = tmp_path / "c.h5"
    # a hung worker never acknowledges STOP: the job is aborted after the stop timeout
    p = run("matmul", a, b, "-o", out, "--planes", 6, "--order", "pairwise",
            "--worker-timeout", 3, n=3, env={"LRMPI_TEST_HANG_RANK": "2",
                                              "LRMPI_TEST_FAIL_AFTER": "5",
                                              "LRMPI_STOP_TIMEOUT_S": "3"}, timeout=60)
    assert since_start(out) < 3 + 3 + 4  # worker timeout + stop timeout + slack
    assert p.returncode != 0
    assert "lrmpi: error: worker 2 of 3 on" in p.stderr, p.stderr
    ck = Checkpoint(out)
    assert ck.attrs["status"] in ("failed", "complete")
    if ck.attrs["status"] == "failed":
        assert "worker 2 of 3" in ck.attrs["message"]
    ref = list(LayeredMatmul(A, B, planes=6, order="pairwise"))
    for i in ck.resolution_indices():
        np.testing.assert_array_equal(ck.resolution(i)[1]["C"], ref[i - 1].C)


def test_disk_full_is_a_clear_error_and_keeps_what_was_written(operands, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    A, B, a, b = operands
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        # each resolution: C 150 KB + state 230 KB: a few fit, then the disk is full
        p = run("matmul", a, b, "-o", disk / "c.h5", "--planes", 8, "--order", "pairwise",
                n=2, timeout=60)
        assert p.returncode == 1, p.stderr
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("lrmpi: error")]
        assert len(errors) == 1 and "No space left on device" in errors[0], p.stderr
        assert "Traceback" not in p.stderr
        ck = Checkpoint(disk / "c.h5")
        ref = list(LayeredMatmul(A, B, planes=8, order="pairwise"))
        assert 1 <= ck.attrs["completed"] < 64
        for i in ck.resolution_indices():
            np.testing.assert_array_equal(ck.resolution(i)[1]["C"], ref[i - 1].C)
        assert not [f for f in os.listdir(disk) if ".tmp." in f]  # no half-written file left
        assert not [f for f in os.listdir(disk / "c.h5.d") if ".tmp." in f]
    finally:
        subprocess.run(["umount", str(disk)])
