"""The inference job's collectives over real MPI: a prepared model broadcast with its
arrays out of band arrives whole and equal on every rank."""
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
