"""Seventh adversarial pass, area 6: launch and settings — kernel ISAs forced, every
scheduling setting at its smallest, the bound settings at their edges, a `squeue` that
hangs or prints garbage, `SLURM_JOB_END_TIME` with a fraction, a launcher size without a
launcher, SIGUSR1 and a deadline while a model is prepared, a margin of 90 %. The README:
every ISA gives the same bits; results never depend on ranks or tiling; bounds are
rigorous whatever the budget; settings out of range are one line, exit 2; a stop with
nothing on disk exits 4, `--deadline-ok` or not."""
import os
import signal
import time

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, attrs_of, bounded, load, mlp_onnx, run,
                       save, start, kill_group)
from adversary6 import assert_same, cache_env, results


def infer(model, data, out, *extra, args=("--planes", "3"), n=None, env=None):
    """`lrmpi infer` with a fresh cache beside the output and `env` on top."""
    return run("infer", model, data, "-o", out, *args, *extra, n=n,
               env={**cache_env(f"{out}.testcache"), **(env or {})})


@pytest.fixture
def model(tmp_path, rng):
    m = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 12, 12, 4))
    X = rng.standard_normal((7, 16)).astype(np.float32)
    return m, save(tmp_path / "d.npy", X), X


def f64_scores(model_path, X):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(model_path)
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}
    h = X.astype(np.float64)
    i = 0
    while f"W{i}" in w:
        h = h @ w[f"W{i}"] + w[f"b{i}"]
        if f"W{i + 1}" in w:
            h = np.maximum(h, 0)
        i += 1
    return h


def test_infer_bit_identical_under_every_kernel_isa(tmp_path, model):
    """`LRMPI_KERNEL=ref` and `avx2` against the default (the best ISA): every resolution
    bit for bit the same (the README: every ISA gives the same bits)."""
    m, data, _ = model
    ref = tmp_path / "best.h5"
    assert_ok(infer(m, data, ref, args=("--planes", "3")))
    for isa in ("ref", "avx2"):
        out = tmp_path / f"{isa}.h5"
        assert_ok(infer(m, data, out, args=("--planes", "3"), env={"LRMPI_KERNEL": isa}))
        assert_same(out, ref)


def test_matmul_ref_kernel_at_two_ranks_equals_best_alone(tmp_path, ops):
    """`LRMPI_KERNEL=ref` at 2 ranks against the default ISA at 1: C bit-identical at every
    resolution."""
    a, b, A, B = ops
    o1, o2 = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(run("matmul", a, b, "-o", o1, "--planes", "3"))
    assert_ok(run("matmul", a, b, "-o", o2, "--planes", "3", n=2, env={"LRMPI_KERNEL": "ref"}))
    with h5py.File(o1, "r") as f, h5py.File(o2, "r") as g:
        for k in f["resolutions"]:
            assert np.array_equal(f["resolutions"][k]["C"][()], g["resolutions"][k]["C"][()]), k


def test_every_scheduling_setting_at_its_minimum_crt_ranks(tmp_path, ops):
    """DEPTH, LOOKAHEAD, WRITE_QUEUE, CHUNK_COLS, MIN_TILE_ROWS, BOUND_ROW_BLOCK = 1 and
    TILES_PER_WORKER = 64 at 3 ranks with `--final crt --write ranks`: complete, C
    bit-identical to a default one-rank run."""
    a, b, A, B = ops
    opts = ("--planes", "2", "--final", "crt", "--moduli", "4")
    ref = tmp_path / "r.h5"
    assert_ok(run("matmul", a, b, "-o", ref, *opts))
    env = {k: "1" for k in ("LRMPI_DEPTH", "LRMPI_LOOKAHEAD", "LRMPI_WRITE_QUEUE",
                            "LRMPI_CHUNK_COLS", "LRMPI_MIN_TILE_ROWS", "LRMPI_BOUND_ROW_BLOCK")}
    env["LRMPI_TILES_PER_WORKER"] = "64"
    out = tmp_path / "o.h5"
    r = bounded("matmul", a, b, "-o", out, *opts, "--write", "ranks", n=3, env=env, limit=60)
    assert_ok(r)
    assert np.array_equal(load(out)[0], load(ref)[0])


@pytest.mark.parametrize("env", [
    {"LRMPI_BOUND_BUDGET": "0", "LRMPI_BOUND_RETRY": "0"},
    {"LRMPI_BOUND_F64": "1", "LRMPI_BOUND_BUDGET": "1e6"},
])
def test_bound_settings_at_edges_stay_rigorous(tmp_path, model, env):
    """The logit bound with no budget (operator-norm only), or with float64 estimates and
    an unlimited budget, at 2 ranks: every score within its bound of the float64 model, and
    every certified sample's decision equal to the float64 model's."""
    m, data, X = model
    out = tmp_path / "o.h5"
    assert_ok(infer(m, data, out, "--rule", "none", args=("--planes", "3"), n=2, env=env))
    want = f64_scores(m, X)
    for k, d in results(out).items():
        assert np.all(np.abs(d["scores"] - want) <= d["bound"][:, None] * (1 + 1e-12)), k
        c = d["certified"]
        assert np.array_equal(d["predicted"][c], want.argmax(1)[c]), k


@pytest.mark.parametrize("script", ["sleep 100", "echo not-a-time", "exit 3"])
def test_squeue_that_hangs_or_prints_garbage(tmp_path, ops, script):
    """Inside SLURM (SLURM_JOB_ID set, no SLURM_JOB_END_TIME) with an `squeue` that hangs,
    prints garbage or fails, `LRMPI_SLURM_TIMEOUT_S=1`: the job is not held (complete,
    exit 0, within 20 s) or refused with one line."""
    a, b, A, B = ops
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "squeue").write_text(f"#!/bin/bash\n{script}\n")
    (fake / "squeue").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_ID": "77",
           "LRMPI_SLURM_TIMEOUT_S": "1"}
    r = bounded("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "1",
                env={k: v for k, v in env.items()}, limit=20)
    if r.returncode == 0:
        assert attrs_of(tmp_path / "C.h5")["status"] == "complete"
    else:
        assert_one_error(r, codes=(1, 2))


def test_slurm_end_time_with_a_fraction_refused_at_three_ranks(tmp_path, ops):
    """`SLURM_JOB_END_TIME=1893456000.5` under `mpiexec -n 3`: one line naming it, exit 2
    (a setting), every rank ends within 20 s, no output."""
    a, b, A, B = ops
    r = bounded("matmul", a, b, "-o", tmp_path / "C.h5", n=3,
                env={"SLURM_JOB_END_TIME": "1893456000.5"})
    assert_one_error(r, codes=(1, 2), contains=("SLURM_JOB_END_TIME",))
    assert not os.path.exists(tmp_path / "C.h5")


@pytest.mark.parametrize("var", ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE"])
def test_launcher_size_without_a_launcher_refused(tmp_path, ops, var):
    """A single process that sees `PMI_SIZE=2` (or Open MPI's size variable): one line
    naming the launcher problem, non-zero, no output written."""
    a, b, A, B = ops
    r = bounded("matmul", a, b, "-o", tmp_path / "C.h5", env={var: "2"})
    assert_one_error(r, codes=(1, 2))
    assert not os.path.exists(tmp_path / "C.h5")


def wait_phase(out, phase, proc, timeout=60):
    limit = time.time() + timeout
    while time.time() < limit and proc.poll() is None:
        try:
            if attrs_of(out).get("phase") == phase:
                return True
        except (OSError, KeyError):
            pass
        time.sleep(0.02)
    return False


def test_sigusr1_while_preparing_single_process_exit_4(tmp_path, model):
    """SIGUSR1 to a one-process `infer` while its model is prepared (slow preparation):
    exit 4 within 5 s, status `deadline`, phase `preparing`, a message saying so."""
    m, data, _ = model
    out = str(tmp_path / "o.h5")
    p = start("infer", m, data, "-o", out, env={"LRMPI_TEST_SLOW_PREPARE_S": "30",
                                                  "LRMPI_CACHE_DIR": ""})
    try:
        assert wait_phase(out, "preparing", p)
        t = time.time()
        os.kill(p.pid, signal.SIGUSR1)
        _, err = p.communicate(timeout=30)
        assert time.time() - t < 5
    finally:
        kill_group(p)
    assert p.returncode == 4, err
    at = attrs_of(out)
    assert at["status"] == "deadline" and at["phase"] == "preparing"
    assert "prepar" in at["message"]


def test_deadline_during_preparation_with_deadline_ok_still_exit_4(tmp_path, model):
    """`--deadline 2 --deadline-ok` at 3 ranks with a preparation of 30 s: exit 4 (never 0),
    every rank ends within 15 s."""
    m, data, _ = model
    out = tmp_path / "o.h5"
    r = bounded("infer", m, data, "-o", out, "--deadline", "2", "--deadline-ok", n=3,
                env={"LRMPI_TEST_SLOW_PREPARE_S": "30", "LRMPI_CACHE_DIR": ""}, limit=15)
    assert r.returncode == 4, r.stderr
    assert "Traceback" not in r.stderr
    assert attrs_of(out)["status"] == "deadline"


def test_margin_fraction_nine_tenths_stops_early_with_its_code(tmp_path, ops):
    """`LRMPI_MARGIN_FRACTION=0.9` with `--deadline 4` and a slow worker (1 s a task): the
    job stops by itself within the deadline, exit 3 or 4 as the file says (resolutions
    listed or not), status `deadline`."""
    a, b, A, B = ops
    out = tmp_path / "C.h5"
    t = time.time()
    r = bounded("matmul", a, b, "-o", out, "--planes", "4", "--deadline", "4", n=2,
                env={"LRMPI_MARGIN_FRACTION": "0.9", "LRMPI_TEST_SLOW_RANK": "1",
                     "LRMPI_TEST_SLOW_S": "1", "LRMPI_ROOT_COMPUTES": "no"}, limit=20)
    assert time.time() - t < 10
    at = attrs_of(out)
    assert at["status"] == "deadline", at
    with h5py.File(out, "r") as f:
        n = len(f["resolutions"])
    assert r.returncode == (3 if n else 4), (r.returncode, n, r.stderr)
