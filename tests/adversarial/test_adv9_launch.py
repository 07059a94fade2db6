"""Ninth pass, launch and settings: LRMPI_* settings that differ between ranks (MPMD
launches), odd rank counts, results bit for bit against one process."""
import os
import subprocess

import numpy as np
import pytest

from adversary import PY, assert_ok, digest, mlp_onnx, mpiexec, run, save
from adversary9 import mpmd, mpmd_bounded, same_results

CRT = ("--planes", "2", "--final", "crt", "--moduli", "4")


@pytest.fixture(scope="module")
def mats(tmp_path_factory):
    d = tmp_path_factory.mktemp("adv9launch")
    r = np.random.default_rng(9)
    a = save(d / "A.npy", r.standard_normal((150, 90)))
    b = save(d / "B.npy", r.standard_normal((90, 70)))
    ref = d / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, *CRT))
    return d, a, b, ref


@pytest.mark.parametrize("setting,write", [
    ("LRMPI_TILES_PER_WORKER=1", "root"), ("LRMPI_CHUNK_COLS=5", "root"),
    ("LRMPI_MIN_TILE_ROWS=7", "ranks"),
    ("LRMPI_DEPTH=1", "ranks"), ("LRMPI_LOOKAHEAD=1", "ranks"), ("LRMPI_KERNEL=ref", "ranks")])
def test_setting_on_the_workers_only_bit_identical(mats, setting, write, tmp_path):
    d, a, b, ref = mats
    k, v = setting.split("=")
    out = tmp_path / "M.h5"
    args = ["matmul", a, b, "-o", out, *CRT, "--write", write]
    res = mpmd(args, [{}, {k: v}, {k: v}])
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert same_results(out, ref)


def test_tiling_settings_on_the_root_only_bit_identical(mats, tmp_path):
    d, a, b, ref = mats
    out = tmp_path / "M.h5"
    env = {"LRMPI_TILES_PER_WORKER": "1", "LRMPI_MIN_TILE_ROWS": "3", "LRMPI_CHUNK_COLS": "7"}
    res = mpmd(["matmul", a, b, "-o", out, *CRT], [env, {}, {}])
    assert res.returncode == 0, res.stderr
    assert same_results(out, ref)


def test_stats_file_set_on_a_worker_only_naming_an_input(mats, tmp_path):
    # Only the root writes the stats file: a worker's LRMPI_STATS_FILE naming an input
    # must never touch that input.
    d, a, b, ref = mats
    before = digest(a)
    out = tmp_path / "M.h5"
    res = mpmd(["matmul", a, b, "-o", out, *CRT], [{}, {"LRMPI_STATS_FILE": a}])
    assert digest(a) == before
    assert res.returncode in (0, 2), res.stderr
    if res.returncode == 0:
        assert same_results(out, ref)


@pytest.mark.parametrize("n", [4, 5])
def test_odd_rank_counts_crt_ranks_keep_latest_equal_one_process(mats, tmp_path, n):
    d, a, b, ref = mats
    out = tmp_path / "M.h5"
    res = run("matmul", a, b, "-o", out, *CRT, "--write", "ranks", "--keep", "latest", n=n,
              timeout=120)
    assert_ok(res)
    import lrmpi
    C, at = lrmpi.load_result(str(out))
    C0, at0 = lrmpi.load_result(str(ref))
    assert np.array_equal(C, C0)
    assert at["bound_abs"] == at0["bound_abs"]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("adv9net")
    r = np.random.default_rng(99)
    m = mlp_onnx(d / "m.onnx", r, sizes=(96, 160, 160, 5))
    x = save(d / "x.npy", r.standard_normal((7, 96)).astype(np.float32))
    ref = d / "ref.h5"
    assert_ok(run("infer", m, x, "-o", ref, "--planes", "3", "--rule", "none",
                  env={"LRMPI_CACHE_DIR": ""}))
    return d, m, x, ref


@pytest.mark.parametrize("worker_env", [
    {"LRMPI_CACHE_DIR": "OTHER"}, {"LRMPI_CACHE_DIR": ""}, {"LRMPI_KERNEL": "ref"},
    {"LRMPI_BOUND_BUDGET": "0", "LRMPI_BOUND_RETRY": "0"}])
def test_infer_setting_differing_on_workers_bit_identical(net, tmp_path, worker_env):
    d, m, x, ref = net
    env = {k: (str(tmp_path / "other") if v == "OTHER" else v) for k, v in worker_env.items()}
    out = tmp_path / "I.h5"
    args = ["infer", m, x, "-o", out, "--planes", "3", "--rule", "none"]
    root = {"LRMPI_CACHE_DIR": str(tmp_path / "c0")}
    res = mpmd(args, [root, env, env])
    assert res.returncode == 0, res.stderr
    assert same_results(out, ref)


def test_workers_given_other_output_follow_the_roots_job(mats, tmp_path):
    d, a, b, ref = mats
    out, other = tmp_path / "W.h5", tmp_path / "WD.h5"
    res = subprocess.run(
        [mpiexec(), "-n", "1", PY, "-m", "lrmpi", "matmul", a, b, "-o", out, *CRT,
         "--write", "ranks", ":", "-n", "2", PY, "-m", "lrmpi", "matmul", a, b,
         "-o", other, "--planes", "3"], capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr
    assert same_results(out, ref)
    assert not os.path.exists(other) and not os.path.exists(str(other) + ".d")


@pytest.mark.parametrize("worker", ["inspect", "infer"])
def test_workers_running_another_command_end_promptly(mats, net, tmp_path, worker):
    d, a, b, ref = mats
    out = tmp_path / "W.h5"
    wargs = (["inspect", ref] if worker == "inspect"
             else ["infer", net[1], net[2], "--planes", "2"])
    code, text = mpmd_bounded([({}, ["matmul", a, b, "-o", out, *CRT]), ({}, wargs)],
                              marker=f"adv9mpmd{worker}", limit=10)
    assert code is not None, "hung"
    assert code != 0 and "Traceback" not in text


def test_a_rank_running_another_program_a_sigterm_ends_the_wait(mats, tmp_path):
    """A root whose peer is not lrmpi at all waits for it in the start-up handshake
    (nonblocking): a SIGTERM through the launcher ends it at once, exit 4 (nothing on
    disk), never a hang."""
    import signal
    import time
    d, a, b, ref = mats
    out = tmp_path / "W.h5"
    p = subprocess.Popen([mpiexec(), "-n", "1", PY, "-m", "lrmpi", "matmul", a, b, "-o", out,
                          ":", "-n", "1", "sleep", "60"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(3)  # the root is in the handshake by now
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)  # to mpiexec, as timeout(1) or SLURM would
        _, err = p.communicate(timeout=15)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert p.returncode != 0 and "Traceback" not in err
    assert not os.path.exists(out)
