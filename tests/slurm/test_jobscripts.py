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

JOB = ("--planes", 8, "--order", "pairwise")
# lrmpi's own settings reach the ranks (jobs inherit the environment)
ENV = {**os.environ, "LRMPI_ROOT_COMPUTES": "no"}


def script(tmp_path, kind, *args, inputs=("A.npy", "B.npy"), out="C.h5"):
    """The script `lrmpi jobscript` prints for this job, written to tmp_path/job.sbatch."""
    p = subprocess.run([sys.executable, "-m", "lrmpi", "jobscript", kind, *inputs, "-o", out,
                        *map(str, args)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    path = tmp_path / "job.sbatch"
    path.write_text(p.stdout)
    return path


def sbatch(tmp_path, path, *opts, env=None, wait=True, timeout=300):
    cmd = ["sbatch", "--parsable", *(["--wait"] if wait else []), "-o", "job-%j.log", *opts,
           str(path)]
    return subprocess.run(cmd, cwd=tmp_path, env={**ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def job_state(p):
    job = p.stdout.strip().split(";")[0]
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                          text=True).stdout


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


@pytest.mark.parametrize("kind", ["matmul", "matmul-mpiexec"])
def test_job_with_a_generous_limit_completes(kind, operands, tmp_path):
    p = sbatch(tmp_path, script(tmp_path, kind, *JOB, "--ntasks", 2, "--time", 5))
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stderr}\njob log:\n{log_of(tmp_path)}"
    ck = assert_identical(tmp_path / "C.h5", reference(*operands))
    assert ck.attrs["status"] == "complete" and ck.attrs["completed"] == 64
    assert ck.attrs["ranks"] == 2


def test_too_short_a_limit_stops_in_time_with_a_result(operands, tmp_path):
    # 128 tasks x 1 s on the only worker: far past --time=1. No requeue here.
    env = {"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "1.0"}
    path = script(tmp_path, "matmul", *JOB, "--ntasks", 2, "--time", 1, "--max-restarts", 0)
    t = time.time()
    p = sbatch(tmp_path, path, "--signal=USR1@20", env=env)
    log = log_of(tmp_path)
    # stopped by lrmpi itself at its deadline, best resolution on disk: a success for
    # SLURM (afterok chains), and the file and the log say deadline
    assert p.returncode == 0, (p.returncode, p.stderr, log)
    assert time.time() - t < 100
    ck = assert_identical(tmp_path / "C.h5", reference(*operands))
    assert ck.attrs["status"] == "deadline" and 1 <= ck.attrs["completed"] < 64
    assert "stopping" in log and "CANCELLED" not in log and "TIME LIMIT" not in log
    assert "stopped at the deadline after 0 restart(s) (exit 0)" in log
    state = job_state(p)
    assert "JobState=COMPLETED" in state and "ExitCode=0:0" in state, state


def test_requeued_job_resumes_and_matches_an_uninterrupted_run(operands, tmp_path):
    env = {"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "0.25"}
    p = sbatch(tmp_path, script(tmp_path, "matmul", *JOB, "--ntasks", 2, "--time", 10),
               env=env, wait=False)
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
    path = script(tmp_path, "infer", "--planes", 3, "--ntasks", 2, "--time", 5,
                  inputs=("m.onnx", "x.npy"), out="s.h5")
    p = sbatch(tmp_path, path)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stderr}\njob log:\n{log_of(tmp_path)}"
    ck = Checkpoint(tmp_path / "s.h5")
    assert ck.attrs["kind"] == "infer" and ck.attrs["status"] == "complete"
    assert ck.attrs["ranks"] == 2 and ck.attrs["completed"] == 3


def srun_plugin():
    """The srun --mpi= plugin `lrmpi jobscript` picks for mpi4py's MPI."""
    from lrmpi.cli.jobscript import _srun_plugin
    return _srun_plugin()


def test_srun_gives_the_world_size_asked_for(tmp_path):
    code = ("import sys; from mpi4py import MPI; c = MPI.COMM_WORLD; "
            "sys.stdout.write(f'rank={c.Get_rank()} size={c.Get_size()}\\n')")
    wrap = f"srun --mpi={srun_plugin()} {sys.executable} -c \"{code}\""
    p = subprocess.run(["sbatch", "--wait", "-n", "3", "-o", "job-%j.log", "--wrap", wrap],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=ENV)
    assert p.returncode == 0, (p.stderr, log_of(tmp_path))
    assert sorted(re.findall(r"rank=(\d) size=(\d)", log_of(tmp_path))) == \
        [("0", "3"), ("1", "3"), ("2", "3")]


def test_srun_without_the_mpis_pmi_is_one_line_not_n_jobs(operands, tmp_path):
    """srun --mpi=none starts every task alone in its MPI world: lrmpi refuses at start
    (one line per task, each its launcher rank's), writes nothing, the step fails."""
    wrap = f"srun --mpi=none {sys.executable} -m lrmpi matmul A.npy B.npy -o C.h5"
    p = subprocess.run(["sbatch", "--wait", "-n", "2", "-o", "job-%j.log", "--wrap", wrap],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=ENV)
    log = log_of(tmp_path)
    assert p.returncode == 1, (p.stderr, log)
    assert "srun --mpi=pmi2" in log and "Traceback" not in log
    assert not (tmp_path / "C.h5").exists()


def test_overwrite_in_the_options_replaces_an_earlier_result(operands, tmp_path):
    (tmp_path / "in put").mkdir()  # a blank in the paths: every word reaches lrmpi whole
    for name in ("A", "B"):
        os.replace(tmp_path / f"{name}.npy", tmp_path / "in put" / f"{name}.npy")
    inputs = ("in put/A.npy", "in put/B.npy")
    p = sbatch(tmp_path, script(tmp_path, "matmul", "--planes", 2, "--ntasks", 2,
                                inputs=inputs, out="in put/C.h5"))
    assert p.returncode == 0, log_of(tmp_path)
    p = sbatch(tmp_path, script(tmp_path, "matmul", "--planes", 3, "--overwrite", "--ntasks",
                                2, inputs=inputs, out="in put/C.h5"))
    assert p.returncode == 0, log_of(tmp_path)
    ck = Checkpoint(tmp_path / "in put" / "C.h5")
    assert ck.attrs["planes"] == 3 and ck.attrs["status"] == "complete"


def test_a_stop_with_nothing_on_disk_is_never_a_success(operands, tmp_path):
    """Exit 4 (stopped with nothing of these inputs on disk) stays 4 for SLURM, with
    DEADLINE_OK: an afterok chain must not go on without a result."""
    from lrmpi import cli
    if not hasattr(cli, "EXIT_NOTHING"):
        pytest.skip("this lrmpi has no exit code 4 yet (issue #24)")
    env = {"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "60"}
    p = sbatch(tmp_path, script(tmp_path, "matmul", *JOB, "--ntasks", 2, "--time", 5,
                                "--max-restarts", 0), env=env, wait=False)
    assert p.returncode == 0, p.stderr
    job = p.stdout.strip().split(";")[0]
    try:
        _wait(lambda: Checkpoint(tmp_path / "C.h5").attrs["status"] == "running", 90, tmp_path)
        subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=10)
        _wait(lambda: "JobState=FAILED" in job_state(p) or "JobState=COMPLETED" in
              job_state(p), 60, tmp_path)
    finally:
        subprocess.run(["scancel", job], timeout=10)
    state = job_state(p)
    assert "JobState=FAILED" in state and "ExitCode=4:0" in state, (state, log_of(tmp_path))
    assert Checkpoint(tmp_path / "C.h5").attrs["completed"] == 0


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
