"""A prepared model as it travels to the ranks (pickled): float32-exact weights as
float32, the digit planes made on arrival when first used; the model that arrives
computes bit for bit what the sent one does."""
import pickle

import numpy as np
import pytest
from test_quantized import MODELS

from lrmpi.nn import graph as G
from lrmpi.nn.engine import PreparedModel


def _travelled(model):
    bufs = []
    data = pickle.dumps(model, protocol=5, buffer_callback=bufs.append)  # as pkl5 sends
    return pickle.loads(data, buffers=bufs), sum(b.raw().nbytes for b in bufs) + len(data)


@pytest.mark.parametrize("name, graph, X", MODELS, ids=[m[0] for m in MODELS])
def test_the_model_that_arrives_computes_bit_for_bit_the_same(name, graph, X):
    model = PreparedModel(graph, 7, 3)
    there, _ = _travelled(model)
    for r in (1, 2, 3):
        model.prepare(r)
        norms = model.norms.values(r)
        there.norms.use(r, norms)
        z, rad = model.evaluate(X, r)
        z2, rad2 = there.evaluate(X, r)
        assert np.array_equal(z, z2) and np.array_equal(rad, rad2)
    for a, b in zip(graph.nodes, there.graph.nodes):
        for key, v in a.params.items():
            if isinstance(v, np.ndarray):
                got = b.params[key]
                assert got.dtype == v.dtype and np.array_equal(got, v), (a.output, key)


def test_float32_exact_weights_travel_in_half_the_bytes_others_whole():
    rng = np.random.default_rng(3)
    W32 = rng.standard_normal((64, 512)).astype(np.float32).astype(np.float64)
    W64 = W32 + 2.0 ** -40  # not a float32 value anywhere
    sizes = {}
    for name, W in (("exact", W32), ("not", W64)):
        g = G.sequential([("linear", {"W": W, "b": np.zeros(64)})], (512,))
        there, sizes[name] = _travelled(PreparedModel(g, 7, 2))
        got = there.graph.nodes[0].params["W"]
        assert got.dtype == np.float64 and np.array_equal(got, W)
        # one array, shared by the graph, the weights and the norms (pickle's memo)
        assert np.shares_memory(there.weights[there.graph.nodes[0].output].W2, got)
    assert sizes["exact"] < 0.6 * W32.nbytes < sizes["not"]


def test_digit_planes_are_made_on_first_use_and_kept_once():
    name, graph, X = MODELS[0]
    model = PreparedModel(graph, 7, 3)
    assert all(w._enc is None for w in model.weights.values())  # rank 0 beside workers
    there, _ = _travelled(model)
    model.prepare(1)
    there.norms.use(1, model.norms.values(1))
    z, _ = there.evaluate(X, 1)
    fused = there._fused
    assert fused is not None and all(fn.supported for fn in fused.nodes.values())
    # the fused kernels keep their packed copy only
    assert all(w._enc is None for w in there.weights.values())
    w = next(iter(there.weights.values()))
    assert np.array_equal(w.enc.digits, PreparedModel(graph, 7, 3).weights[w.node.output]
                          .enc.digits)
