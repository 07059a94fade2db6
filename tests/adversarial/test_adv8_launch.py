"""Eighth adversarial pass, area 6: launch and settings — the writer thread's niceness at
its edges, a probe timeout too short for any child, an upper-case kernel name, a raising
worker of an inference job, `~` in LRMPI_CACHE_DIR, SIGTERM with `--deadline-ok` on an
inference job then a resume at one rank, the root computing an inference at 3 ranks, a
worker SIGSTOPped when the job is told to stop, a lower-case DEBUG log level, and a bad
setting on one rank only (MPMD launch). The README: every setting outside its range is
refused on every rank with one line, exit 2; no combination hangs; exit codes as the table;
results never depend on the rank count."""
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from adversary import (PY, SLOW, assert_ok, assert_one_error, attrs_of, bounded, error_lines,
                       kill_group, load, mlp_onnx, mpiexec, rank_pid, run, save, start,
                       wait_for)
from adversary6 import assert_same, infer


@pytest.mark.parametrize("nice", ["19", "-20"])
def test_writer_nice_edges_complete_same_result(tmp_path, done, nice):
    """LRMPI_WRITER_NICE=19 / -20 at 2 ranks: complete, C equal to the plain run's."""
    out0, a, b, _, _ = done
    out = tmp_path / "N.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", n=2,
                  env={"LRMPI_WRITER_NICE": nice}))
    assert np.array_equal(load(out)[0], load(out0)[0])


def test_probe_timeout_tiny_inspect_one_line_or_ok(done):
    """LRMPI_PROBE_TIMEOUT_S=0.001: `inspect` succeeds or fails with one line; never a
    traceback or a hang."""
    out = done[0]
    r = bounded("inspect", out, env={"LRMPI_PROBE_TIMEOUT_S": "0.001"}, limit=30)
    if r.returncode != 0:
        assert_one_error(r, code=1)
    else:
        assert "Traceback" not in r.stderr


def test_kernel_name_in_upper_case(tmp_path, done):
    """LRMPI_KERNEL=REF: accepted (C equal to the best kernel's: the kernels are exact) or
    refused with one line naming the variable, exit 2."""
    out0, a, b, _, _ = done
    out = tmp_path / "K.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "2", env={"LRMPI_KERNEL": "REF"})
    if r.returncode == 0:
        assert np.array_equal(load(out)[0], load(out0)[0])
    else:
        assert_one_error(r, code=2, contains=("LRMPI_KERNEL",))


@pytest.fixture
def mdl(tmp_path, rng):
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 12, 12, 4))
    return model, save(tmp_path / "d.npy", rng.standard_normal((9, 16)).astype(np.float32))


def test_raising_worker_of_an_inference_job(tmp_path, mdl):
    """LRMPI_TEST_FAIL_RANK=1 under `mpiexec -n 3 lrmpi infer`: exit 1 within seconds, one
    line naming rank 1, the file `failed`."""
    model, data = mdl
    out = tmp_path / "o.h5"
    r = bounded("infer", model, data, "-o", out, "--rule", "none", n=3,
                env={"LRMPI_TEST_FAIL_RANK": "1", "LRMPI_CACHE_DIR": ""}, limit=40)
    line = assert_one_error(r, code=1)
    assert "1" in line, line
    assert attrs_of(out)["status"] == "failed"


def test_tilde_in_cache_dir_stays_inside_home_or_cwd(tmp_path, mdl):
    """LRMPI_CACHE_DIR=~/lc with HOME set: complete; the cache is made under HOME (or as a
    literal `~` folder in the working folder), nowhere else."""
    model, data = mdl
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "w"
    work.mkdir()
    r = run("infer", model, data, "-o", tmp_path / "o.h5", cwd=work,
            env={"LRMPI_CACHE_DIR": "~/lc", "HOME": str(home)})
    assert_ok(r)
    made = [p for p in (home / "lc", work / "~" / "lc") if p.is_dir() and os.listdir(p)]
    assert len(made) == 1, (os.listdir(home), os.listdir(work))


def test_infer_sigterm_deadline_ok_then_resume_alone(tmp_path, mdl):
    """`mpiexec -n 2 lrmpi infer --deadline-ok` sent SIGTERM after res 1: exit 0, status
    `deadline`; `--resume` alone completes bit-identical to an uninterrupted run."""
    model, data = mdl
    ref = tmp_path / "ref.h5"
    assert_ok(infer(model, data, ref, "--rule", "none"))
    out = tmp_path / "o.h5"
    args = ("infer", model, data, "-o", out, "--planes", "3", "--rule", "none", "--deadline-ok")
    p = start(*args, n=2, env={**SLOW, "LRMPI_TEST_SLOW_S": "0.5", "LRMPI_CACHE_DIR": ""})
    try:
        wait_for(out, 1, p)
        os.killpg(p.pid, signal.SIGTERM)
        p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert p.returncode == 0
    assert attrs_of(out)["status"] == "deadline"
    assert_ok(run(*args, "--resume", env={"LRMPI_CACHE_DIR": ""}))
    assert_same(out, ref)


def test_root_computes_inference_at_three_ranks_bit_identical(tmp_path, mdl):
    """LRMPI_ROOT_COMPUTES=yes, `mpiexec -n 3 lrmpi infer`: bit-identical to one rank."""
    model, data = mdl
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(infer(model, data, a, "--rule", "none"))
    assert_ok(run("infer", model, data, "-o", b, "--planes", "3", "--rule", "none", n=3,
                  env={"LRMPI_ROOT_COMPUTES": "yes", "LRMPI_CACHE_DIR": ""}))
    assert_same(b, a)


def test_sigstopped_worker_when_the_job_is_told_to_stop(tmp_path, ops):
    """Rank 1 SIGSTOPped, then SIGTERM to the root rank, LRMPI_STOP_TIMEOUT_S=2: the job
    ends within 20 s (the stopped worker is given up), non-zero; the resolutions listed
    before stay readable."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    p = start("matmul", a, b, "-o", out, "--planes", "3", n=3,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.5", "LRMPI_STOP_TIMEOUT_S": "2",
                   "ADV_MARK": "adv8stop"})
    w = None
    try:
        wait_for(out, 1, p)
        w = rank_pid("adv8stop", 1)
        os.kill(w, signal.SIGSTOP)
        os.kill(rank_pid("adv8stop", 0), signal.SIGTERM)
        t0 = time.time()
        try:
            p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 20 s after SIGTERM with a stopped worker")
        assert time.time() - t0 < 20
        assert p.returncode != 0
    finally:
        if w:
            try:
                os.kill(w, signal.SIGCONT)
            except ProcessLookupError:
                pass
        kill_group(p)
    assert load(out)[0].shape == (40, 16)


def test_log_level_debug_lower_case_at_two_ranks(tmp_path, done):
    """LRMPI_LOG_LEVEL=debug at 2 ranks: complete, no error line, C equal."""
    out0, a, b, _, _ = done
    out = tmp_path / "D.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "2", n=2, env={"LRMPI_LOG_LEVEL": "debug"})
    assert r.returncode == 0 and not error_lines(r.stderr), r.stderr
    assert np.array_equal(load(out)[0], load(out0)[0])


@pytest.mark.parametrize("bad_rank", [0, 1])
def test_bad_setting_on_one_rank_only(tmp_path, ops, bad_rank):
    """MPMD launch, LRMPI_DEPTH=0 on rank 0 only or on rank 1 only: the job ends within 5
    s, non-zero, with one `lrmpi: error` line naming the variable; no output written."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    base = [PY, "-m", "lrmpi", "matmul", a, b, "-o", str(out)]
    parts = []
    for r in range(2):
        pre = ["env", "LRMPI_DEPTH=0"] if r == bad_rank else []
        parts += (([":"] if parts else []) + ["-n", "1", *pre, *base])
    p = subprocess.Popen([mpiexec(), *parts], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        so, se = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        kill_group(p)
        pytest.fail("hung with a bad setting on one rank")
    assert p.returncode != 0
    errs = error_lines(se)
    assert len(errs) >= 1 and "LRMPI_DEPTH" in errs[0], so + se
    assert "Traceback" not in so + se
    assert not out.exists()
