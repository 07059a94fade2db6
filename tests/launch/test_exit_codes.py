"""Exit codes (issue #24 D5, D6): 0 complete, or with --deadline-ok stopped with a
resolution of these inputs on disk; 3 stopped with one; 4 stopped with none (never 0);
and an --overwrite with other inputs that stops early keeps its work resumable."""
import os
import signal
import time

import numpy as np
from launching import finish, kill_tree, run, start

from lrmpi import LayeredMatmul
from lrmpi.jobs.checkpoint import Checkpoint
from lrmpi.jobs.matmul import load_result

# one worker that sleeps before each task, the root computing nothing: resolution 1
# needs at least SLOW_S
SLOW_S = 1.5
SLOW = {"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": str(SLOW_S),
        "LRMPI_ROOT_COMPUTES": "no", "LRMPI_TILES_PER_WORKER": "1"}


def save(tmp_path, name, shape, seed):
    X = np.random.default_rng(seed).standard_normal(shape)
    np.save(tmp_path / name, X)
    return X, tmp_path / name


def wait_for(cond, proc, timeout=60):
    limit = time.time() + timeout
    while time.time() < limit:
        if proc.poll() is not None:
            raise AssertionError(f"job ended early: {finish(proc, 5)}")
        try:
            if cond():
                return
        except (OSError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError("condition not met")


def test_a_stop_with_nothing_on_disk_exits_4_even_with_deadline_ok(tmp_path):
    """D6: --deadline-ok exited 0 with completed=0."""
    _, a = save(tmp_path, "A.npy", (64, 32), 1)
    _, b = save(tmp_path, "B.npy", (32, 48), 2)
    out = tmp_path / "c.h5"
    p = run("matmul", a, b, "-o", out, "--planes", 2, "--deadline", "1s", "--deadline-ok",
            n=2, env=SLOW, timeout=60)
    assert p.returncode == 4, p.stderr
    assert "no resolution of these inputs on disk" in p.stderr
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "deadline" and ck.completed == 0
    # without an output nothing is ever on disk: a stop is 4 as well
    p = run("matmul", a, b, "--planes", 2, "--deadline", "1s", "--deadline-ok", n=2, env=SLOW,
            timeout=60)
    assert p.returncode == 4, p.stderr


def test_overwrite_with_other_inputs_keeps_the_old_result_until_its_first_resolution(tmp_path):
    """D5: it exited 0 with the old product in OUT.h5 and the new work lost."""
    _, a = save(tmp_path, "A.npy", (64, 32), 1)
    B, b = save(tmp_path, "B.npy", (32, 48), 2)
    A2, a2 = save(tmp_path, "A2.npy", (64, 32), 3)
    out = tmp_path / "c.h5"
    assert run("matmul", a, b, "-o", out, "--planes", 2, n=1).returncode == 0
    old = Checkpoint(out).job_id
    before = load_result(out)[0]
    # stopped before its first resolution: the old result stays, nothing of A2 B: 4
    p = run("matmul", a2, b, "-o", out, "--planes", 2, "--overwrite", "--deadline", "1s",
            "--deadline-ok", n=2, env=SLOW, timeout=60)
    assert p.returncode == 4, p.stderr
    assert Checkpoint(out).job_id == old
    np.testing.assert_array_equal(load_result(out)[0], before)
    assert sorted(os.listdir(str(out) + ".d")) == [".lock", old]
    # stopped after its first resolution: that resolution replaced the old result
    proc = start("matmul", a2, b, "-o", out, "--planes", 2, "--overwrite", "--deadline-ok",
                 n=2, env=SLOW)
    try:
        wait_for(lambda: Checkpoint(out).job_id != old and Checkpoint(out).completed >= 1, proc)
        proc.send_signal(signal.SIGTERM)
        rc, err = finish(proc, 30)
    finally:
        kill_tree(proc)
    assert rc == 0, err  # --deadline-ok: a resolution of these inputs is on disk
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "deadline" and 1 <= ck.completed < 3
    assert not os.path.exists(os.path.join(str(out) + ".d", old))
    # ... and --resume with the new inputs continues it to the uninterrupted result
    p = run("matmul", a2, b, "-o", out, "--planes", 2, "--resume", n=2)
    assert p.returncode == 0, p.stderr
    want = list(LayeredMatmul(A2, B, planes=2))[-1].C
    np.testing.assert_array_equal(load_result(out)[0], want)


def test_a_stop_with_a_resolution_on_disk_exits_3_or_0_with_deadline_ok(tmp_path):
    _, a = save(tmp_path, "A.npy", (64, 32), 1)
    _, b = save(tmp_path, "B.npy", (32, 48), 2)
    out = tmp_path / "c.h5"
    for flag, code in (([], 3), (["--deadline-ok"], 0)):
        proc = start("matmul", a, b, "-o", out, "--planes", 2, "--overwrite", *flag, n=2,
                     env=SLOW)
        try:
            wait_for(lambda: Checkpoint(out).completed >= 1
                     and Checkpoint(out).attrs["status"] == "running", proc)
            proc.send_signal(signal.SIGTERM)
            rc, err = finish(proc, 30)
        finally:
            kill_tree(proc)
        assert rc == code, err
