"""The job scripts on a real SLURM: completion, time limit, requeue, srun world size."""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from lrmpi import LayeredMatmul
from lrmpi.jobs.checkpoint import Checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "jobscripts", "matmul.sbatch")
SCRIPT_MPIEXEC = os.path.join(ROOT, "jobscripts", "matmul-mpiexec.sbatch")
JOB = "--planes 8 --order pairwise"


def job_env(tmp_path, **extra):
    return {**os.environ, "LRMPI_PYTHON": sys.executable,
            "LRMPI_MPIEXEC": os.path.join(os.path.dirname(sys.executable), "mpiexec"),
            "LRMPI_A": "A.npy", "LRMPI_B": "B.npy", "LRMPI_OUT": "C.h5",
            "LRMPI_OPTIONS": JOB, "LRMPI_ROOT_COMPUTES": "no", **extra}


def sbatch(tmp_path, script, *opts, env, wait=True, timeout=300):
    cmd = ["sbatch", "--parsable", *(["--wait"] if wait else []), "-o", "job-%j.log", *opts,
           script]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def log_of(tmp_path):
    return "".join(p.read_text() for p in tmp_path.glob("job-*.log"))


def reference(A, B):
    return [r.C for r in LayeredMatmul(A, B, planes=8, order="pairwise")]


def assert_identical(out, ref, upto=None):
    ck = Checkpoint(out)
    done = ck.resolution_indices()
    assert done == list(range(1, len(done) + 1))
    for i in done[:upto]:
        np.testing.assert_array_equal(ck.resolution(i)[1]["C"], ref[i - 1])
    return ck


@pytest.mark.parametrize("script", [SCRIPT, SCRIPT_MPIEXEC])
def test_job_with_a_generous_limit_completes(script, operands, tmp_path):
    p = sbatch(tmp_path, script, "--ntasks=2", "--time=5", env=job_env(tmp_path))
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stderr}\njob log:\n{log_of(tmp_path)}"
    ck = assert_identical(tmp_path / "C.h5", reference(*operands))
    assert ck.attrs["status"] == "complete" and ck.attrs["completed"] == 64
    assert ck.attrs["ranks"] == 2


def test_too_short_a_limit_stops_in_time_with_a_result(operands, tmp_path):
    # 128 tasks x 1 s on the only worker: far past --time=1. No requeue here.
    env = job_env(tmp_path, LRMPI_MAX_RESTARTS="0", LRMPI_TEST_SLOW_RANK="1",
                  LRMPI_TEST_SLOW_S="1.0")
    t = time.time()
    p = sbatch(tmp_path, SCRIPT, "--ntasks=2", "--time=1", "--signal=USR1@20", env=env)
    log = log_of(tmp_path)
    # stopped by lrmpi itself at its deadline, best resolution on disk: a success for
    # SLURM (afterok chains), and the file and the log say deadline
    assert p.returncode == 0, (p.returncode, p.stderr, log)
    assert time.time() - t < 100
    ck = assert_identical(tmp_path / "C.h5", reference(*operands))
    assert ck.attrs["status"] == "deadline" and 1 <= ck.attrs["completed"] < 64
    assert "stopping" in log and "CANCELLED" not in log and "TIME LIMIT" not in log
    assert "stopped at the deadline" in log
    job = p.stdout.strip().split(";")[0]
    state = subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                           text=True).stdout
    assert "JobState=COMPLETED" in state and "ExitCode=0:0" in state, state


def test_requeued_job_resumes_and_matches_an_uninterrupted_run(operands, tmp_path):
    env = job_env(tmp_path, LRMPI_TEST_SLOW_RANK="1", LRMPI_TEST_SLOW_S="0.25")
    p = sbatch(tmp_path, SCRIPT, "--ntasks=2", "--time=10", env=env, wait=False)
    assert p.returncode == 0, p.stderr
    job = p.stdout.strip().split(";")[0]
    out = tmp_path / "C.h5"
    try:
        _wait(lambda: out.exists() and Checkpoint(out).attrs["completed"] >= 3, 90, tmp_path)
        subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=10)
        _wait(lambda: "restart 1" in log_of(tmp_path), 120, tmp_path)
        _wait(lambda: Checkpoint(out).attrs["status"] == "complete", 180, tmp_path)
    finally:
        subprocess.run(["scancel", job], timeout=10)
    log = log_of(tmp_path)
    assert "requeueing job" in log and "restart 1" in log
    ck = assert_identical(out, reference(*operands))
    assert ck.attrs["completed"] == 64


def test_infer_job_completes(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("sklearn")
    from lrmpi.experiments import digits
    X, _ = digits.mlp_onnx(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", X)
    env = job_env(tmp_path, LRMPI_MODEL="m.onnx", LRMPI_DATA="x.npy", LRMPI_OUT="s.h5",
                  LRMPI_OPTIONS="--planes 3")
    p = sbatch(tmp_path, os.path.join(ROOT, "jobscripts", "infer.sbatch"), "--ntasks=2",
               "--time=5", env=env)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stderr}\njob log:\n{log_of(tmp_path)}"
    ck = Checkpoint(tmp_path / "s.h5")
    assert ck.attrs["kind"] == "infer" and ck.attrs["status"] == "complete"
    assert ck.attrs["ranks"] == 2 and ck.attrs["completed"] == 3


def test_srun_gives_the_world_size_asked_for(tmp_path):
    code = ("import sys; from mpi4py import MPI; c = MPI.COMM_WORLD; "
            "sys.stdout.write(f'rank={c.Get_rank()} size={c.Get_size()}\\n')")
    wrap = f"srun --mpi=pmi2 {sys.executable} -c \"{code}\""
    p = subprocess.run(["sbatch", "--wait", "-n", "3", "-o", "job-%j.log", "--wrap", wrap],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.stderr, log_of(tmp_path))
    assert sorted(re.findall(r"rank=(\d) size=(\d)", log_of(tmp_path))) == \
        [("0", "3"), ("1", "3"), ("2", "3")]


def _wait(cond, timeout, tmp_path):
    limit = time.time() + timeout
    while time.time() < limit:
        try:
            if cond():
                return
        except (OSError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out; job log:\n{log_of(tmp_path)}")
