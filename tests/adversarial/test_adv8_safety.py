"""Eighth adversarial pass, area 1: safety promises — `inspect --plot --overwrite` aimed at
the checkpoint itself, an infer `--overwrite` whose data is the old result's resolution,
an `--overwrite` whose operand is the old job's resume data (`sumsNNN.h5`), `-o` naming the
cache's graph .npy / .npz, a SIGKILLed infer `--overwrite` of a matmul result, a cache
folder inside the output's folder, `--keep latest` pruning with an input in the job folder.
The README: lrmpi deletes only what it wrote, never one of the running job's inputs (even in
an old job's folder); `-o` refuses an input or a file lrmpi did not write as a checkpoint;
`--plot` never over a file without `--overwrite`; the earlier result stays until the new one
is at least as good."""
import glob
import os
import signal

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, attrs_of, digest, job_folder, kill_group,
                       load, mlp_onnx, run, save, snapshot, start)
from adversary8 import gmodels, ginfer, graph_npy, warm  # noqa: F401


@pytest.mark.parametrize("target", ["job", "res"])
def test_plot_aimed_at_the_checkpoint_with_overwrite(done, tmp_path, target):
    """`inspect C.h5 --plot C.h5 --overwrite` (or --plot its res002.h5): one line, exit 2,
    every file of the checkpoint unchanged."""
    out = done[0]
    before = snapshot(tmp_path)
    plot = out if target == "job" else os.path.join(job_folder(out), "res002.h5")
    assert_one_error(run("inspect", out, "--plot", plot, "--overwrite"), code=2)
    assert snapshot(tmp_path) == before


def test_infer_overwrite_whose_data_is_the_old_results_resolution(tmp_path, rng):
    """A matmul result C (6x16) at OUT; `infer m.onnx OUT.h5.d/<id>/res003.h5:/C -o OUT
    --overwrite`: complete, and the old res003.h5 (the new job's input) is kept unchanged."""
    a = save(tmp_path / "A.npy", rng.standard_normal((6, 8)))
    b = save(tmp_path / "B.npy", rng.standard_normal((8, 16)))
    out = tmp_path / "OUT.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    res3 = os.path.join(job_folder(out), "res003.h5")
    keep = digest(res3)
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    assert_ok(run("infer", model, f"{res3}:/C", "-o", out, "--overwrite", "--planes", "2",
                  env={"LRMPI_CACHE_DIR": ""}))
    assert attrs_of(out)["kind"] == "infer" and attrs_of(out)["status"] == "complete"
    assert digest(res3) == keep


def test_overwrite_with_the_old_resume_data_as_operand_refused_intact(tmp_path, ops):
    """`--overwrite --keep latest` with A read from the old job's `sums003.h5:/sums` (a 3-D
    int array): one line, exit 1; the old result and its resume data unchanged."""
    a, b, A, B = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    sums = os.path.join(job_folder(out), "sums003.h5")
    before = snapshot(tmp_path)
    assert_one_error(run("matmul", f"{sums}:/sums", b, "-o", out, "--overwrite", "--keep",
                         "latest", "--planes", "2"), code=1)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == \
        {k: v for k, v in before.items() if not k.endswith(".lock")}


@pytest.mark.parametrize("ext", ["npy", "npz"])
def test_output_naming_the_cached_graph_files_refused(tmp_path, gmodels, ext):
    """`-o` naming the cache's graph .npy / .npz of the very model (with --overwrite): one
    line, the entry unchanged."""
    m1, _, data, seed, _ = gmodels
    cache = warm(seed, tmp_path / "c")
    entry = graph_npy(cache)[:-3] + ext
    keep = digest(entry)
    res = ginfer(m1, data, entry, cache, "--overwrite")
    assert_one_error(res, codes=(1, 2))
    assert digest(entry) == keep


def test_sigkill_of_infer_overwrite_of_a_matmul_result(done, tmp_path, rng):
    """An infer `--overwrite` of a matmul result SIGKILLed while it prepares the model: the
    matmul result loads as before, a file planted in C.h5.d survives."""
    out, a, b, A, B = done
    C0, _ = load(out)
    planted = tmp_path / "C.h5.d" / "mine.txt"
    planted.write_text("mine")
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    data = save(tmp_path / "d.npy", rng.standard_normal((3, 16)).astype(np.float32))
    p = start("infer", model, data, "-o", out, "--overwrite",
              env={"LRMPI_TEST_SLOW_PREPARE_S": "30", "LRMPI_CACHE_DIR": ""})
    d = tmp_path / "C.h5.d"
    try:
        import time
        limit = time.time() + 30
        while time.time() < limit and p.poll() is None:
            if len([x for x in os.listdir(d) if (d / x).is_dir()]) >= 2:  # the new job's folder
                break
            time.sleep(0.02)
        assert p.poll() is None, "the overwrite ended before it prepared"
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        kill_group(p)
    C1, _ = load(out)
    assert attrs_of(out)["kind"] == "matmul" and np.array_equal(C0, C1)
    assert planted.read_text() == "mine"


def test_cache_folder_inside_the_dot_d_of_a_keep_latest_result(tmp_path, gmodels):
    """LRMPI_CACHE_DIR = OUT.h5.d/cache of an infer job with `--keep latest`, then an
    `--overwrite`: the cache entries survive both runs and the result is complete."""
    m1, _, data, _, ref1 = gmodels
    out = tmp_path / "s.h5"
    cache = tmp_path / "s.h5.d" / "cache"
    assert_ok(ginfer(m1, data, out, cache, "--keep", "latest"))
    names = sorted(os.listdir(cache))
    assert any(n.startswith("graph-") for n in names)
    assert_ok(ginfer(m1, data, out, cache, "--keep", "latest", "--overwrite"))
    assert sorted(os.listdir(cache)) == names
    assert attrs_of(out)["status"] == "complete"


def test_keep_latest_prunes_nothing_the_running_job_reads(tmp_path, ops):
    """A keep-all result; an `--overwrite --keep latest` job whose B is the old job's
    res001.h5:/C transposed shape-wise (B = C1 of 40x16, A' 5x40): complete, res001.h5 kept."""
    a, b, A, B = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    res1 = os.path.join(job_folder(out), "res001.h5")
    keep = digest(res1)
    A2 = save(tmp_path / "A2.npy", np.ones((5, 40)))
    assert_ok(run("matmul", A2, f"{res1}:/C", "-o", out, "--overwrite", "--keep", "latest",
                  "--planes", "2", n=2))
    assert digest(res1) == keep
    C, at = load(out)
    with h5py.File(res1, "r") as f:
        C1 = f["C"][()]
    assert np.abs(C - np.ones((5, 40)) @ C1).max() <= at["bound_abs"]


def test_pack_into_the_cache_folder_then_infer_keeps_the_pack(tmp_path, gmodels):
    """`lrmpi pack` of an infer result written into the cache folder (a user's file there,
    `graph-mine.h5`): the next infer using that cache completes and the pack is unchanged."""
    m1, _, data, seed, _ = gmodels
    cache = warm(seed, tmp_path / "c")
    out = tmp_path / "s.h5"
    assert_ok(ginfer(m1, data, out, cache))
    pack = cache / "graph-mine.h5"
    assert_ok(run("pack", out, pack))
    keep = digest(pack)
    assert_ok(ginfer(m1, data, tmp_path / "t.h5", cache))
    assert digest(pack) == keep


def test_stats_file_in_the_cache_folder_leaves_entries(tmp_path, gmodels, ops):
    """LRMPI_STATS_FILE named `norms3-x.json` in the cache folder for a matmul, then an infer
    with that cache: both complete; the stats file and the cache's entries stay."""
    m1, _, data, seed, ref1 = gmodels
    cache = warm(seed, tmp_path / "c")
    a, b, _, _ = ops
    stats = cache / "norms3-x.json"
    assert_ok(run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "2",
                  env={"LRMPI_STATS_FILE": str(stats)}))
    assert stats.exists()
    keep = digest(stats)
    before = {p: digest(p) for p in glob.glob(str(cache / "*")) if not p.endswith(".json")}
    assert_ok(ginfer(m1, data, tmp_path / "s.h5", cache))
    assert digest(stats) == keep
    for p, d in before.items():
        assert digest(p) == d
