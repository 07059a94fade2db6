"""Stops honoured while a model is prepared (#30 item 4): the job file exists
before the long preparation (status running, phase preparing); SIGTERM, SIGINT
and the deadline end the job within 2 s with status deadline, a message saying
what it was doing, and exit code 4 (nothing of this job on disk; 130 for Ctrl-C).
The preparation is made deliberately slow by a test-only setting."""
import signal
import time

import numpy as np
import pytest
from launching import finish, kill_tree, run, start, wait_for_file

from lrmpi.jobs.checkpoint import Checkpoint

SLOW_PREPARE = {"LRMPI_TEST_SLOW_PREPARE_S": "120"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tiny convolutional model and 4 samples."""
    from onnx_graphs import model, node
    d = tmp_path_factory.mktemp("prep")
    rng = np.random.default_rng(0)
    f = np.float32
    path = model(d / "m.onnx", [node("Conv", ["x", "W"], "c"), node("Relu", ["c"], "r"),
                                node("GlobalAveragePool", ["r"], "g"),
                                node("Flatten", ["g"], "fl"),
                                node("Gemm", ["fl", "W2"], "y", transB=1)],
                 {"W": rng.standard_normal((4, 2, 3, 3)).astype(f),
                  "W2": rng.standard_normal((3, 4)).astype(f)}, (2, 6, 6))
    np.save(d / "x.npy", rng.standard_normal((4, 2, 6, 6)))
    return path, d / "x.npy"


def wait_for_phase(path, proc, phase):
    """Poll the job file until it says status running in `phase`."""
    wait_for_file(path, proc, lambda f: f.attrs.get("status") == "running"
                  and f.attrs.get("phase") == phase, f"not running in phase {phase}")


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 4, "received SIGTERM"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_a_signal_ends_a_preparing_job_within_2s(small, tmp_path, n, sig, code, said):
    model, data = small
    out = tmp_path / "o.h5"
    proc = start("infer", model, data, "-o", out, n=n, env=SLOW_PREPARE)
    try:
        wait_for_phase(out, proc, "preparing")
        t0 = time.perf_counter()
        proc.send_signal(sig)  # to mpiexec, which forwards it to every rank
        rc, err = finish(proc, 30)
        took = time.perf_counter() - t0
    finally:
        kill_tree(proc)
    assert rc == code, err
    assert took < 2.0, (took, err)
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "deadline" and ck.attrs["completed"] == 0
    assert ck.attrs["phase"] == "preparing"
    assert ck.attrs["message"].startswith(f"{said} while preparing the model"), ck.attrs
    if code == 4:
        assert "no resolution of these inputs on disk" in err
        shown = run("inspect", out)
        assert "infer status=deadline (preparing) completed=0/4" in shown.stdout, shown


def test_the_deadline_ends_a_preparing_job_with_exit_4(small, tmp_path):
    model, data = small
    out = tmp_path / "o.h5"
    t0 = time.perf_counter()
    p = run("infer", model, data, "-o", out, "--deadline", "3s", "--margin", "0",
            "--deadline-ok", n=3, env=SLOW_PREPARE, timeout=60)
    took = time.perf_counter() - t0
    assert p.returncode == 4, p.stderr  # never 0, not even with --deadline-ok
    assert took < 3 + 2 + 3, took       # the deadline, 2 s to stop, start-up
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "deadline" and ck.attrs["completed"] == 0
    assert ck.attrs["message"].startswith("deadline reached while preparing the model")
    # nothing to resume: the next run starts from the beginning and completes
    p = run("infer", model, data, "-o", out, "--resume", "--planes", 2, n=3)
    assert p.returncode == 0, p.stderr
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "complete" and ck.attrs["phase"] == "computing"
    assert ck.attrs["read_s"] > 0 and ck.attrs["planes_s"] > 0 and ck.attrs["norms_s"] >= 0
    assert "lrmpi: model prepared at" in p.stderr


@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 4, "received SIGTERM"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_a_signal_before_the_job_starts_ends_it_on_every_rank(small, tmp_path, sig, code, said):
    """The ranks have met (handshake) and the workers wait for the root's job, which
    has not begun (rank 0 held back by a test-only setting): Ctrl-C there made the
    root return at once and the workers wait for it forever (CI, 3 ranks on 2 busy
    cores). Held like the scheduler's signals, it stops the job at its first check."""
    model, data = small
    out = tmp_path / "o.h5"
    proc = start("infer", model, data, "-o", out, n=3,
                 env={"LRMPI_TEST_SLOW_START_S": "60"})
    try:
        for line in proc.stderr:  # rank 0 says when it is held back
            if "(test_slow_start_s) waiting before the job" in line:
                break
        else:
            raise AssertionError(f"no start-up line: {finish(proc, 10)}")
        time.sleep(0.3)  # the workers are in their job by now
        proc.send_signal(sig)
        rc, err = finish(proc, 30)
    finally:
        kill_tree(proc)
    assert rc == code, err
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "deadline" and ck.attrs["completed"] == 0
    assert ck.attrs["message"].startswith(f"{said} while preparing the model"), ck.attrs
