"""The inference job's collectives over real MPI: a prepared model broadcast with its
arrays out of band arrives whole and equal on every rank."""
import os

import numpy as np
import pytest

from lrmpi.nn import graph as G
from lrmpi.nn.engine import PreparedModel
from lrmpi.parallel.collective import Group
from lrmpi.parallel.comm import get_comm

pytestmark = pytest.mark.mpi(min_size=1)


def test_a_broadcast_model_is_equal_on_every_rank():
    comm = get_comm()
    group = Group(comm)
    rng = np.random.default_rng(5)
    W = rng.standard_normal((300, 2000))  # 4.8 MB: pkl5 sends it out of band
    g = G.sequential([("linear", {"W": W, "b": rng.standard_normal(300)}), ("relu", {}),
                      ("linear", {"W": W[:10, :300].astype(np.float32).astype(np.float64),
                                  "b": np.zeros(10)})], (2000,))
    model = PreparedModel(g, 7, 2) if group.rank == 0 else None
    got = group.bcast(model)
    X = rng.standard_normal((4, 2000))
    ref = PreparedModel(g, 7, 2)  # every rank made the same graph from the same seed
    for r in (1, 2):
        ref.prepare(r)
        got.norms.use(r, ref.norms.values(r))
        z, rad = got.evaluate(X, r)
        z0, rad0 = ref.evaluate(X, r)
        assert np.array_equal(z, z0) and np.array_equal(rad, rad0)
    for a, b in zip(g.nodes, got.graph.nodes):
        for key, v in a.params.items():
            if isinstance(v, np.ndarray):
                assert np.array_equal(b.params[key], v)
    sums = comm.allgather(float(np.sum(got.graph.nodes[0].params["W"])))
    assert len(set(sums)) == 1 and len(sums) == comm.Get_size()


@pytest.mark.parametrize("elsewhere", [False, True])
def test_a_cached_model_is_mapped_here_and_sent_elsewhere(tmp_path, monkeypatch, elsewhere):
    """A model read from the cache folder holds its large weights as views of a mapped
    file: ranks on rank 0's host map that file themselves (nothing of it travels);
    ranks that cannot (here: they say they run on another host) receive the arrays.
    Either way every rank computes with rank 0's values."""
    pytest.importorskip("onnx")
    from lrmpi import config
    from lrmpi.experiments import models
    from lrmpi.nn.loading import load_model, settle
    from lrmpi.numerics.buffers import file_region
    from lrmpi.parallel import shipping
    comm = get_comm()
    group = Group(comm)
    base = comm.bcast(str(tmp_path) if group.rank == 0 else None, root=0)
    path = os.path.join(base, "m.onnx")
    model = None
    if group.rank == 0:
        models.save(models.mlp((300, 200, 10), seed=4), path)
        with config.configure(cache_dir=os.path.join(base, "cache")):
            model = PreparedModel(settle(load_model(path)), 7, 2)
        assert file_region(model.graph.nodes[0].params["W"]) is not None
    elif elsewhere:
        monkeypatch.setattr(shipping, "hostname", lambda: "another-host")
    got = group.bcast(model)
    W = got.graph.nodes[0].params["W"]
    if group.rank:
        assert (file_region(W) is None) == elsewhere
    digests = comm.allgather([cache_digest(n.params[k]) for n in got.graph.nodes
                              for k in sorted(n.params) if isinstance(n.params[k], np.ndarray)])
    assert all(d == digests[0] for d in digests)
    X = np.random.default_rng(1).standard_normal((3, 300))
    got.prepare(1) if group.rank == 0 else None
    norms = comm.bcast(got.norms.values(1) if group.rank == 0 else None, root=0)
    got.norms.use(1, norms)
    z = comm.allgather(got.evaluate(X, 1)[0])
    assert all(np.array_equal(a, z[0]) for a in z)


def cache_digest(a):
    from lrmpi.cache import array_digest
    return (a.dtype.str, a.shape, array_digest(a))
