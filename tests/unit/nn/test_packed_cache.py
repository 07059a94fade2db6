"""The fused kernels' packed weights kept in the cache folder (nn/packed_cache.py):
a second FusedModel of the same model maps them instead of packing again, and
computes bit for bit the same; a damaged or foreign entry reads as absent."""
import os
import threading

import numpy as np
import pytest
from test_fused import odd_chain, ISAS

from lrmpi import config
from lrmpi.nn import packed_cache
from lrmpi.nn.fused import FusedModel
from lrmpi.nn.quantized import NodeWeights


@pytest.fixture
def kept(tmp_path, monkeypatch):
    monkeypatch.setattr(packed_cache, "MIN_BYTES", 0)  # this model's few kB are kept too
    with config.configure(cache_dir=str(tmp_path)):
        yield tmp_path


def _stored():
    """Wait for the entries being written (packed_cache.store_later's threads)."""
    for t in threading.enumerate():
        if t.name == "lrmpi-packed-cache":
            t.join()


def _model(isa):
    rng = np.random.default_rng(4)
    graph = odd_chain(rng, ("relu", {}))
    weights = {n.output: NodeWeights(n, 7, 3) for n in graph.linear}
    X = rng.standard_normal((4,) + graph.input_shape)
    fm = FusedModel(graph, weights, 7, isa=isa)
    _stored()
    return graph, weights, X, fm


@pytest.mark.parametrize("isa", ISAS)
def test_a_second_model_maps_the_kept_weights_and_computes_the_same(kept, isa):
    graph, weights, X, first = _model(isa)
    files = sorted(os.listdir(kept))
    assert [f.split("-")[0] for f in files] == ["packed", "packed"]  # .npy and .npz
    second = FusedModel(graph, weights, 7, isa=isa)
    for name, fn in second.nodes.items():
        assert isinstance(fn.wpack.base, np.memmap) or isinstance(fn.wpack, np.memmap)
        assert fn.wpack.ctypes.data % 64 == 0  # as the kernels read them
        np.testing.assert_array_equal(fn.wpack, first.nodes[name].wpack)
        np.testing.assert_array_equal(fn.f, first.nodes[name].f)
    for r in (1, 2, 3):
        np.testing.assert_array_equal(second.forward(X, r), first.forward(X, r))
    other = [i for i in ISAS if i != isa]
    if other:  # each ISA packs its own layout: its own entry
        FusedModel(graph, weights, 7, isa=other[0])
        _stored()
        assert len(os.listdir(kept)) == 4


def test_a_damaged_or_foreign_entry_reads_as_absent(kept):
    isa = ISAS[0]
    graph, weights, X, first = _model(isa)
    k = packed_cache.key(graph, weights, isa)
    data = kept / f"packed-{k}.npy"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1  # one bit of the last node's packed weights
    data.write_bytes(bytes(raw))
    assert packed_cache.load(k) is None
    again = FusedModel(graph, weights, 7, isa=isa)  # packs again (and keeps them again)
    _stored()
    np.testing.assert_array_equal(again.forward(X, 2), first.forward(X, 2))
    assert packed_cache.load(k) is not None
    (kept / f"packed-{k}.npz").write_bytes(b"not a zip")
    assert packed_cache.load(k) is None


def test_packed_weights_changed_in_place_under_a_job_are_noticed(kept):
    """The packed file is mapped: a write into it (not a replacement, which a mapping
    does not see) reaches the kernels. forward() refuses to return what it computed
    since (it returned other weights' results, every sample still certified)."""
    from lrmpi.errors import InputError
    isa = ISAS[0]
    graph, weights, X, first = _model(isa)
    second = FusedModel(graph, weights, 7, isa=isa)
    assert second.packed_key is not None
    np.testing.assert_array_equal(second.forward(X, 2), first.forward(X, 2))
    path = kept / f"packed-{second.packed_key}.npy"
    with open(path, "r+b") as f:   # the same bytes again: the ctime moves, the digest not
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(last)
    np.testing.assert_array_equal(second.forward(X, 2), first.forward(X, 2))
    with open(path, "r+b") as f:   # one weight's byte changed in place
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(InputError, match="changed in place"):
        second.forward(X, 2)


def test_other_weights_have_another_key(kept):
    isa = ISAS[0]
    graph, weights, X, _ = _model(isa)
    k = packed_cache.key(graph, weights, isa)
    node = graph.linear[1]
    node.params["W"] = node.params["W"].copy()
    node.params["W"].flat[3] += 2.0 ** -30
    changed = {n.output: NodeWeights(n, 7, 3) for n in graph.linear}
    assert packed_cache.key(graph, changed, isa) != k
    assert packed_cache.key(graph, {n: NodeWeights(w.node, 7, 4) for n, w in changed.items()},
                            isa) != packed_cache.key(graph, changed, isa)


def test_small_models_are_not_kept(tmp_path):
    with config.configure(cache_dir=str(tmp_path)):
        _model(ISAS[0])
    assert not [f for f in os.listdir(tmp_path) if f.startswith("packed")]


def test_another_build_of_the_kernels_or_a_packing_of_another_size_is_not_used(kept,
                                                                                 monkeypatch):
    isa = ISAS[0]
    graph, weights, X, first = _model(isa)
    k = packed_cache.key(graph, weights, isa)
    monkeypatch.setattr(packed_cache, "_build", lambda: "rebuilt")
    assert packed_cache.key(graph, weights, isa) != k  # a rebuild never meets old entries
    monkeypatch.undo()
    monkeypatch.setattr(packed_cache, "MIN_BYTES", 0)
    kept_runs = packed_cache.load(k)
    name = next(iter(kept_runs))
    short = {**kept_runs, name: (kept_runs[name][0][:-64], kept_runs[name][1])}
    monkeypatch.setattr(packed_cache, "load", lambda key: short)
    again = FusedModel(graph, weights, 7, isa=isa)  # that node packed again, not read short
    _stored()
    np.testing.assert_array_equal(again.nodes[name].wpack, first.nodes[name].wpack)
    np.testing.assert_array_equal(again.forward(X, 3), first.forward(X, 3))
