"""SIGKILL of the root at random instants; resume after a kill."""
import os
import random
import signal
import time

import numpy as np
import pytest
from launching import kill_tree, random_instant, rank_pid, run, start, wait_for_resolutions

from lrmpi import LayeredMatmul
from lrmpi.jobs.checkpoint import Checkpoint

# 100 kills in all by default: 60 of matmul jobs (every fifth under mpiexec), 40 of infer
TRIALS = int(os.environ.get("LRMPI_KILL_TRIALS", "60"))
INFER_TRIALS = int(os.environ.get("LRMPI_INFER_KILL_TRIALS", "40"))
JOB = ("--planes", 8, "--order", "pairwise")  # 64 resolutions
SLOW0 = {"LRMPI_TEST_SLOW_RANK": "0", "LRMPI_TEST_SLOW_S": "0.02"}


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(42)
    A = rng.standard_normal((160, 96)) * np.exp(rng.uniform(-4, 4, (160, 1)))
    B = rng.standard_normal((96, 120))
    return A, B, [r.C for r in LayeredMatmul(A, B, planes=8, order="pairwise")]


def save_operands(reference, tmp_path):
    """A.npy and B.npy in tmp_path; returns the reference resolutions."""
    A, B, ref = reference
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    return ref


def check_survivors(out, ref):
    """Every resolution the job file links is readable and identical to the reference."""
    if not os.path.exists(out):
        return 0  # killed before the first checkpoint: nothing was promised yet
    ck = Checkpoint(out)
    done = ck.resolution_indices()
    assert done == list(range(1, len(done) + 1))
    assert ck.attrs["completed"] == len(done)
    for i in done:
        np.testing.assert_array_equal(ck.resolution(i)[1]["C"], ref[i - 1])
    return len(done)


@pytest.mark.slow
def test_random_sigkills_of_the_root_lose_nothing_finished(reference, tmp_path):
    ref = save_operands(reference, tmp_path)
    rnd = random.Random(2026)
    survived = []
    for trial in range(TRIALS):
        out = tmp_path / f"c{trial}.h5"
        n = 2 if trial % 5 == 4 else None  # every fifth trial under mpiexec: kill rank 0
        env = SLOW0 if n is None else {**SLOW0, "LRMPI_TEST_SLOW_RANK": "1",
                                       "LRMPI_ROOT_COMPUTES": "no"}
        proc = start("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out, *JOB, n=n,
                     env=env)
        try:
            random_instant(proc, out, rnd, len(ref))
            os.kill(proc.pid if n is None else rank_pid(proc, 0), signal.SIGKILL)
        finally:
            kill_tree(proc)
        survived.append(check_survivors(out, ref))
    assert any(0 < s < len(ref) for s in survived), survived  # kills did land mid-job
    print(f"matmul: {TRIALS} SIGKILLs, resolutions on disk after each: {survived}, lost: 0")


@pytest.mark.slow
def test_random_sigkills_of_infer_jobs_lose_nothing_finished(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("sklearn")
    from lrmpi.experiments import digits
    from lrmpi.jobs.inference import run_infer
    X, _ = digits.cnn_onnx(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", X)
    # 8 resolutions: the later ones cost r^2 pair products a layer, and a trial runs
    # until its random resolution is listed
    args = ("infer", tmp_path / "m.onnx", tmp_path / "x.npy", "--planes", 8, "--no-adaptive")
    full = []
    run_infer(str(tmp_path / "m.onnx"), X, planes=8, rule="none",
              on_resolution=lambda m, s, p, r: full.append(s.copy()))
    rnd = random.Random(7)
    survived = []
    for trial in range(INFER_TRIALS):
        out = tmp_path / f"i{trial}.h5"
        proc = start(*args, "-o", out, env={"LRMPI_TEST_SLOW_RANK": "0",
                                             "LRMPI_TEST_SLOW_S": "0.02"})
        try:
            random_instant(proc, out, rnd, 8)  # start-up (import onnx) is not counted
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            kill_tree(proc)
        done = 0
        if os.path.exists(out):
            ck = Checkpoint(out)
            done = len(ck.resolution_indices())
            assert ck.resolution_indices() == list(range(1, done + 1))
            assert ck.attrs["completed"] == done
            for i in range(1, done + 1):
                np.testing.assert_array_equal(ck.resolution(i)[1]["scores"], full[i - 1])
        survived.append(done)
    assert any(0 < s < 8 for s in survived), survived
    print(f"infer: {INFER_TRIALS} SIGKILLs, resolutions on disk after each: {survived}, lost: 0")


def test_resume_after_kill_is_identical_and_skips_finished_work(reference, tmp_path):
    A, B, ref = reference
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    out = tmp_path / "c.h5"
    proc = start("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out, *JOB, n=2,
                 env={**SLOW0, "LRMPI_TEST_SLOW_RANK": "1"})
    try:
        wait_for_resolutions(out, 3, proc)
        os.kill(rank_pid(proc, 0), signal.SIGKILL)
    finally:
        kill_tree(proc)
    done = check_survivors(out, ref)
    assert 3 <= done < len(ref)
    # the file still says running; nobody writes it: --status says killed (a script's
    # wait-while-running loop ends), inspect says so and how to continue
    assert Checkpoint(out).attrs["status"] == "running"
    st = run("inspect", out, "--status")
    assert st.returncode == 0 and st.stdout == "killed\n", st.stdout + st.stderr
    assert "--resume continues it" in run("inspect", out).stdout
    p = run("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out, *JOB, "--resume", n=2)
    assert p.returncode == 0, p.stderr
    assert f"lrmpi: resolution {done}/" not in p.stderr  # not recomputed
    assert f"lrmpi: resolution {done + 1}/" in p.stderr
    assert check_survivors(out, ref) == len(ref)
    assert Checkpoint(out).attrs["status"] == "complete"


def test_resume_refuses_damaged_resume_data(reference, tmp_path):
    """Level sums out of the exact adder's range, or of other levels than the
    resolution's pairs, end the resume with one clear error (no wrong result)."""
    import h5py

    from lrmpi.jobs.checkpoint import schema
    A, B, _ = reference
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    out = tmp_path / "c.h5"
    assert run("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out,
               "--planes", 2).returncode == 0
    from tamper import reseal  # past the checksums: the checks behind them
    with h5py.File(out, "r+") as f:
        f.attrs["status"] = "deadline"  # as if stopped after its last resolution
    reseal(out)
    for damage in ("range", "levels"):
        path = schema.sums_file(out, Checkpoint(out).job_id, 2)
        with h5py.File(path, "r+") as f:
            if damage == "range":
                data = f["sums"][()].astype(np.int64)
                data[0, 0, 0] = 2**62
                del f["sums"]
                f["sums"] = data
            else:
                f.attrs["levels"] = [1]
        reseal(path)
        p = run("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out, "--planes", 2,
                "--resume")
        assert p.returncode == 1, p.stderr
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("lrmpi: error")]
        assert len(errors) == 1 and "resolution 2" in errors[0], p.stderr
        assert "Traceback" not in p.stderr


def test_resume_refuses_other_inputs_or_options(reference, tmp_path):
    A, B, _ = reference
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    np.save(tmp_path / "A2.npy", A * 2)
    out = tmp_path / "c.h5"
    assert run("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out,
               "--planes", 2).returncode == 0
    p = run("matmul", tmp_path / "A2.npy", tmp_path / "B.npy", "-o", out, "--planes", 2,
            "--resume")
    assert p.returncode == 1 and "cannot resume" in p.stderr and "inputs differ" in p.stderr
    p = run("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out, "--planes", 3,
            "--resume")
    assert p.returncode == 1 and "planes=2, this run has planes=3" in p.stderr
    assert Checkpoint(out).attrs["status"] == "complete"  # refused: left untouched


def test_keep_latest_lists_one_resolution_and_resumes_identically(reference, tmp_path):
    """--keep latest: the job file lists only the last resolution (the others' files are
    gone), resolution 1's resume data is its own C unless kept, and a stopped job resumes
    to the same final bits as an uninterrupted one."""
    A, B, ref = reference
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    out = tmp_path / "c.h5"
    args = ("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out, "--planes", 8,
            "--order", "pairwise", "--keep", "latest")
    proc = start(*args, n=2, env={"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "0.05",
                                  "LRMPI_ROOT_COMPUTES": "no"})
    try:
        wait_for_resolutions(out, 2, proc)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        kill_tree(proc)
    ck = Checkpoint(out)
    done = ck.completed
    assert ck.attrs["status"] == "deadline" and 1 <= done < 64
    assert ck.resolution_indices() == [done]
    assert len(ck.durable) == done and all(d > 0 for d in ck.durable)
    files = os.listdir(os.path.join(str(out) + ".d", ck.job_id))
    assert sorted(f for f in files if f.startswith("res")) == [f"res{done:03d}.h5"]
    assert {f"sums{i:03d}.h5" for i in range(1, done + 1)} <= set(files)
    p = run(*args, "--resume", n=3)
    assert p.returncode == 0, p.stderr
    ck = Checkpoint(out)
    assert ck.completed == 64 and ck.resolution_indices() == [64]
    np.testing.assert_array_equal(ck.resolution(64)[1]["C"], ref[-1])


RANKS_TRIALS = int(os.environ.get("LRMPI_RANKS_KILL_TRIALS", "6"))


@pytest.mark.slow
def test_sigkills_with_results_written_by_the_ranks_lose_nothing_finished(reference, tmp_path):
    """--write ranks under mpiexec -n 3: a SIGKILL of any rank (a worker holding its
    files half-written, or the root) ends the job by itself, and every resolution the
    job file lists reads back whole (its rank files were committed before it was
    listed; a missing one is an error, never fill values)."""
    ref = save_operands(reference, tmp_path)
    rnd = random.Random(7)
    survived = []
    for trial in range(RANKS_TRIALS):
        out = tmp_path / f"r{trial}.h5"
        victim = trial % 3
        proc = start("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out, *JOB,
                     "--write", "ranks", n=3,
                     env={"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "0.02"})
        try:
            wait_for_resolutions(out, rnd.randrange(1, 8), proc, timeout=120)
            time.sleep(rnd.uniform(0.0, 0.2))
            os.kill(rank_pid(proc, victim), signal.SIGKILL)
            proc.communicate(timeout=30)  # the job ends by itself
            assert proc.returncode != 0
        finally:
            kill_tree(proc)
        survived.append(check_survivors(out, ref))
    assert any(s > 0 for s in survived), survived
    print(f"--write ranks: {RANKS_TRIALS} SIGKILLs (ranks 0, 1, 2), resolutions listed and "
          f"whole after each: {survived}, lost: 0")


@pytest.mark.parametrize("n, write, keep", [(None, "root", "all"), (2, "ranks", "latest")])
def test_crt_job_killed_after_its_last_resolution_is_listed_resumes_to_complete(
        tmp_path, n, write, keep):
    """The job file a SIGKILL leaves between listing the last (CRT) resolution and marking
    the job complete (status running, completed = planned; made from a complete job, its
    resume data gone as keep=latest removes it): `--resume` marks it complete without
    the data it does not need (the CRT resolution adds no level sums), C unchanged."""
    import h5py
    from tamper import reseal
    rng = np.random.default_rng(3)
    np.save(tmp_path / "A.npy", rng.standard_normal((50, 40)))
    np.save(tmp_path / "B.npy", rng.standard_normal((40, 30)))
    out = tmp_path / "c.h5"
    args = ("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out, "--planes", 2,
            "--final", "crt", "--moduli", 3, "--write", write, "--keep", keep)
    p = run(*args, n=n)
    assert p.returncode == 0, p.stderr
    before = Checkpoint(out)
    C = before.resolution(before.completed)[1]["C"]
    with h5py.File(out, "r+") as f:
        f.attrs["status"] = "running"
    reseal(out)
    p = run(*args, "--resume", n=n)
    assert p.returncode == 0, p.stderr
    ck = Checkpoint(out)
    assert ck.status == "complete" and ck.completed == ck.planned == before.planned
    assert ck.job_id == before.job_id
    np.testing.assert_array_equal(ck.resolution(ck.completed)[1]["C"], C)
    assert run("inspect", out).returncode == 0
