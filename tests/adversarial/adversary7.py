"""Helpers of the seventh adversarial pass: a model whose kernels' packed weights are kept
in the cache folder (>= 16 MB packed) yet cheap to run — one 1088x1024 layer at 16 planes
(18 MB packed) with the bound's budget at 0 (the operator-norm bound)."""
import numpy as np
import pytest

from adversary import assert_ok, mlp_onnx, run, save
from adversary6 import cache_env, entries

PACK_ARGS = ("--planes", "16", "--rule", "none")
PACK_ENV = {"LRMPI_BOUND_BUDGET": "0", "LRMPI_BOUND_RETRY": "0"}


def pinfer(model, data, out, cache, n=None, env=None):
    return run("infer", model, data, "-o", out, *PACK_ARGS, n=n,
               env={**PACK_ENV, **cache_env(cache), **(env or {})}, timeout=120)


@pytest.fixture(scope="session")
def packed2(tmp_path_factory):
    """Two models of one architecture whose packed weights are kept, data, each one's
    filled cache and no-cache reference: (m1, m2, data, cache1, cache2, ref1)."""
    d = tmp_path_factory.mktemp("adv7packed")
    rng = np.random.default_rng(77)
    m1 = mlp_onnx(d / "p1.onnx", rng, sizes=(1088, 1024, 4))
    m2 = mlp_onnx(d / "p2.onnx", rng, sizes=(1088, 1024, 4))
    data = save(d / "pd.npy", rng.standard_normal((2, 1088)).astype(np.float32))
    c1, c2 = d / "c1", d / "c2"
    assert_ok(pinfer(m1, data, d / "a.h5", c1))
    assert_ok(pinfer(m2, data, d / "b.h5", c2))
    assert entries(c1, "packed") and entries(c2, "packed")
    ref1 = d / "ref1.h5"
    assert_ok(pinfer(m1, data, ref1, ""))
    return m1, m2, data, c1, c2, ref1
