"""Helpers of the sixth adversarial pass: the per-model cache folder (LRMPI_CACHE_DIR) and
inference results compared bit for bit. Built on adversary.py's helpers (the real CLI)."""
import glob
import os
import shutil

import h5py
import numpy as np
import pytest

from adversary import assert_ok, mlp_onnx, run, save

# A model whose kernels' packed weights reach the 16 MB the README names (4352*1024 weights
# at 4 planes: 17.8 MB packed), cheap to bound (one wide layer).
BIG_SIZES = (4352, 1024, 4)
BIG_ARGS = ("--planes", "4", "--rule", "none")
TINY_ARGS = ("--planes", "3", "--rule", "none")


def results(out):
    """{resolution: {dataset: array}} of an inference checkpoint."""
    with h5py.File(out, "r") as f:
        return {k: {d: f["resolutions"][k][d][()] for d in f["resolutions"][k]}
                for k in f["resolutions"]}


def assert_same(got, want):
    """Two inference checkpoints hold the same resolutions, bit for bit."""
    g, w = results(got), results(want)
    assert g.keys() == w.keys()
    for k in w:
        for name in w[k]:
            assert np.array_equal(g[k][name], w[k][name], equal_nan=True), (k, name)


def entries(cache, kind):
    """The cache's files of one kind (graph, norms3, packed)."""
    return sorted(glob.glob(os.path.join(str(cache), f"{kind}-*")))


def cache_env(cache):
    return {"LRMPI_CACHE_DIR": str(cache)}


def infer(model, data, out, *extra, cache=None, n=None, args=TINY_ARGS, **kw):
    """`lrmpi infer` with LRMPI_CACHE_DIR=cache (default: a fresh folder beside the output,
    never the user's ~/.cache: an empty LRMPI_CACHE_DIR is not "none" on current main)."""
    if cache is None:
        cache = f"{out}.testcache"
    return run("infer", model, data, "-o", out, *args, *extra, n=n, env=cache_env(cache), **kw)


@pytest.fixture
def tiny(tmp_path, rng):
    """Two ReLU MLPs of one architecture (other weights), data, and a no-cache reference of
    the first: (m1, m2, data, ref1)."""
    m1 = mlp_onnx(tmp_path / "m1.onnx", rng)
    m2 = mlp_onnx(tmp_path / "m2.onnx", rng)
    data = save(tmp_path / "d.npy", rng.standard_normal((6, 16)).astype(np.float32))
    ref1 = tmp_path / "ref1.h5"
    assert_ok(infer(m1, data, ref1))
    return m1, m2, data, ref1


@pytest.fixture(scope="session")
def big(tmp_path_factory):
    """A model with packed weights kept, its data, a seed cache filled by one cold run and
    that run's checkpoint (the reference): (model, data, seed cache, ref)."""
    d = tmp_path_factory.mktemp("adv6big")
    rng = np.random.default_rng(6)
    model = mlp_onnx(d / "big.onnx", rng, sizes=BIG_SIZES)
    data = save(d / "bd.npy", rng.standard_normal((4, BIG_SIZES[0])).astype(np.float32))
    seed, ref = d / "seed", d / "ref.h5"
    assert_ok(infer(model, data, ref, cache=seed, args=BIG_ARGS, timeout=300))
    assert entries(seed, "packed"), os.listdir(seed)
    return model, data, seed, ref


def copy_cache(seed, dest):
    shutil.copytree(seed, dest)
    return dest
