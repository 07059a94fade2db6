"""Ninth pass, damaged or hand-edited checkpoints and cache entries: the model cache's
keyed .npz files edited with their names and keys intact, checkpoint files truncated or
edited, before a run."""
import glob
import os
import shutil

import h5py
import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, attrs_of, digest, job_folder, mlp_onnx,
                       run, run_nocap, save, snapshot)
from adversary9 import datasets, same_results, stop_at

NET_ARGS = ("--planes", "3", "--rule", "none")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A model whose graph goes to the cache as .npy + .npz, data, a warm seed cache and
    the no-cache reference."""
    d = tmp_path_factory.mktemp("adv9dmg")
    r = np.random.default_rng(93)
    m = mlp_onnx(d / "m.onnx", r, sizes=(96, 160, 160, 5))
    x = save(d / "x.npy", r.standard_normal((7, 96)).astype(np.float32))
    seed = d / "seed"
    assert_ok(run("infer", m, x, "-o", d / "warm.h5", *NET_ARGS,
                  env={"LRMPI_CACHE_DIR": str(seed)}))
    ref = d / "ref.h5"
    assert_ok(run("infer", m, x, "-o", ref, *NET_ARGS, env={"LRMPI_CACHE_DIR": ""}))
    return d, m, x, seed, ref


def one(cache, pattern):
    found = glob.glob(os.path.join(str(cache), pattern))
    assert len(found) == 1, os.listdir(str(cache))
    return found[0]


def edit_npz(path, change):
    z = dict(np.load(path, allow_pickle=False))
    change(z)
    np.savez(path, **z)


def infer_with(net, cache, out, runner=run):
    d, m, x, seed, ref = net
    return runner("infer", m, x, "-o", out, *NET_ARGS, env={"LRMPI_CACHE_DIR": str(cache)})


def test_graph_npz_small_parameter_edited_is_not_used(net, tmp_path):
    cache = shutil.copytree(net[3], tmp_path / "c")
    npz = one(cache, "graph-*.npz")
    edit_npz(npz, lambda z: z.__setitem__("node4.b", z["node4.b"] + 1.0))
    out = tmp_path / "I.h5"
    assert_ok(infer_with(net, cache, out))
    assert same_results(out, net[4])


def test_norms_entry_scaled_down_bounds_stay_rigorous(net, tmp_path):
    cache = shutil.copytree(net[3], tmp_path / "c")
    npz = one(cache, "norms3-*.npz")
    edit_npz(npz, lambda z: z.update({k: v * 1e-6 for k, v in z.items() if v.dtype.kind == "f"}))
    out = tmp_path / "I.h5"
    assert_ok(infer_with(net, cache, out))
    got, ref = datasets(out), datasets(net[4])
    last = max(ref)
    for k in got:
        err = np.abs(got[k]["scores"] - ref[last]["scores"])
        bound = got[k]["bound"]
        if bound.ndim == 1:   # one bound per sample: on its largest logit error
            err = err.max(axis=1)
        assert np.all(bound >= err * (1 - 1e-12)), (k, bound, err)
    assert same_results(out, net[4])


def test_graph_npz_replaced_by_a_folder(net, tmp_path):
    cache = shutil.copytree(net[3], tmp_path / "c")
    npz = one(cache, "graph-*.npz")
    os.remove(npz)
    os.mkdir(npz)
    with open(os.path.join(npz, "mine.txt"), "w") as f:
        f.write("x")
    out = tmp_path / "I.h5"
    assert_ok(infer_with(net, cache, out))
    assert same_results(out, net[4])
    assert os.listdir(npz) == ["mine.txt"]


def test_norms_entry_unreadable_without_caps(net, tmp_path):
    cache = shutil.copytree(net[3], tmp_path / "c")
    npz = one(cache, "norms3-*.npz")
    os.chmod(npz, 0)
    out = tmp_path / "I.h5"
    res = infer_with(net, cache, out, runner=run_nocap)
    assert_ok(res)
    assert same_results(out, net[4])


def test_complete_job_with_truncated_last_resolution_resume_one_line(done):
    out, a, b, A, B = done
    res3 = os.path.join(job_folder(out), "res003.h5")
    with open(res3, "r+b") as f:
        f.truncate(1000)
    snap = snapshot(str(out) + ".d")
    before = digest(out)
    res = run("matmul", a, b, "-o", out, "--planes", "2", "--resume")
    assert_one_error(res, code=1, contains=("res003.h5",))
    assert digest(out) == before and snapshot(str(out) + ".d") == snap
    insp = run("inspect", out)
    assert_one_error(insp, code=1, contains=("res003.h5",))


def test_complete_job_with_edited_resume_data_named(done):
    out, a, b, A, B = done
    sums = os.path.join(job_folder(out), "sums002.h5")
    with h5py.File(sums, "r+") as f:
        name = list(f)[0]
        f[name][0, 0, 0] = f[name][0, 0, 0] + 1
    for args in (("inspect", out), ("matmul", a, b, "-o", out, "--planes", "2", "--resume")):
        res = run(*args)
        assert_one_error(res, code=1, contains=("sums002.h5", "checksum"))


def test_stopped_crt_partial_file_truncated_resume(ops, tmp_path):
    a, b, A, B = ops
    opts = ("--planes", "2", "--final", "crt", "--moduli", "5")
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, *opts))
    out = tmp_path / "C.h5"
    code, err = stop_at(out, 3, "matmul", a, b, "-o", out, *opts, n=2, slow="0.3",
                        env={"LRMPI_TILES_PER_WORKER": "4", "LRMPI_MIN_TILE_ROWS": "8"},
                        after=0.8)
    assert code == 3, err
    partial = [f for f in os.listdir(job_folder(out)) if f.startswith("partial")]
    assert partial, os.listdir(job_folder(out))
    p = os.path.join(job_folder(out), partial[0])
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) // 2)
    res = run("matmul", a, b, "-o", out, *opts, "--resume")
    if res.returncode == 0:
        assert same_results(out, ref)
    else:
        assert_one_error(res, code=1, contains=(partial[0],))


def test_job_file_order_edited_with_its_checksum_kept(done):
    out, a, b, A, B = done
    with h5py.File(out, "r+") as f:
        f.attrs["order"] = "lshape"
    for args in (("inspect", out),
                 ("matmul", a, b, "-o", out, "--planes", "2", "--order", "lshape", "--resume")):
        res = run(*args)
        assert_one_error(res, code=1)


@pytest.mark.parametrize("name", ["res002.h5", "sums002.h5"])
def test_folder_planted_at_next_file_while_running_then_resume(ops, tmp_path, name):
    from adversary import kill_group, load, start
    from adversary9 import wait_completed
    a, b, A, B = ops
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "2"))
    out = tmp_path / "L.h5"
    p = start("matmul", a, b, "-o", out, "--planes", "2",
              env={"LRMPI_TEST_SLOW_RANK": "0", "LRMPI_TEST_SLOW_S": "0.8"})
    try:
        assert wait_completed(out, 1, p)
        planted = os.path.join(job_folder(out), name)
        os.mkdir(planted)
        with open(os.path.join(planted, "mine"), "w") as f:
            f.write("x")
        _, err = p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert p.returncode == 1
    assert len([l for l in err.splitlines() if "error" in l]) == 1 and "Traceback" not in err
    assert os.listdir(planted) == ["mine"]
    C1, _ = load(out)
    assert attrs_of(out)["completed"] == 1
    assert run("inspect", out, "--status").stdout.strip() in ("failed", "killed")
    shutil.rmtree(planted)
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--resume"))
    assert same_results(out, ref)
