"""The imported graph is kept in the cache folder: a model seen before starts
without running the importer, and the cached graph computes what the imported one
does (the zoo's graphs too: their movement nodes' parameters survive the JSON)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")

from lrmpi import config  # noqa: E402
from lrmpi.experiments import models  # noqa: E402
from lrmpi.nn import ops  # noqa: E402
from lrmpi.nn.loading import load_model  # noqa: E402
from lrmpi.nn.onnx_import import load_model as import_onnx  # noqa: E402

PROBE = ("import sys; from lrmpi.nn.loading import load_model; g = load_model(sys.argv[1]); "
         "print(len(g.nodes), 'lrmpi.nn.onnx_import' in sys.modules)")


def _probe(path, cache):
    env = {**os.environ, "LRMPI_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, "-c", PROBE, path], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


def test_a_model_seen_before_loads_without_the_importer(tmp_path):
    path = models.save(models.resnet_small(), str(tmp_path / "m.onnx"))
    cache = str(tmp_path / "cache")
    first, again = _probe(path, cache), _probe(path, cache)
    assert first == [first[0], "True"]     # imported once ...
    assert again == [first[0], "False"]    # ... then read from the cache
    assert os.listdir(cache) and not any(n.startswith("m") for n in os.listdir(tmp_path / "cache"))


@pytest.mark.parametrize("build", [models.mlp, models.vgg_small, models.resnet_small,
                                   models.mobilenet_small])
def test_the_cached_graph_computes_what_the_import_does(tmp_path, build):
    path = models.save(build(), str(tmp_path / "m.onnx"))
    with config.configure(cache_dir=str(tmp_path / "c")):
        load_model(path)                  # stores
        cached = load_model(path)         # reads back
    direct = import_onnx(path)
    X = np.random.default_rng(0).standard_normal((3,) + direct.input_shape)
    np.testing.assert_array_equal(ops.forward(cached, X), ops.forward(direct, X))
    assert (cached.head, cached.output, cached.shapes) == (direct.head, direct.output, direct.shapes)


def test_a_zoo_graph_read_back_from_the_cache_computes_the_same(tmp_path, name="shufflenet"):
    """ShuffleNet's channel shuffles (reshape, transpose), its logits chosen by
    output=: the second load comes from the cache, with the same nodes, parameters,
    float logits and resolution-1 logits and radii."""
    from onnx_graphs import zoo_model

    from lrmpi.nn.engine import PreparedModel
    path, shape, logits = zoo_model(name, tmp_path)  # two outputs: the option chooses
    with config.configure(cache_dir=str(tmp_path / "c")):
        first = load_model(path, output=logits)
        assert len(os.listdir(tmp_path / "c")) == 1
        again = load_model(path, output=logits)
        assert len(os.listdir(tmp_path / "c")) == 1  # read back, not stored again
    assert [(n.op, n.inputs, n.output) for n in again.nodes] == \
        [(n.op, n.inputs, n.output) for n in first.nodes]
    for a, b in zip(first.nodes, again.nodes):  # tuples may come back as lists
        assert a.params.keys() == b.params.keys()
        for k, v in a.params.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(b.params[k], v, err_msg=k)
            else:
                assert json.loads(json.dumps(b.params[k])) == json.loads(json.dumps(v)), k
    assert again.shapes == first.shapes and again.outputs == first.outputs
    X = np.random.default_rng(2).standard_normal((1,) + shape)
    np.testing.assert_array_equal(ops.forward(again, X), ops.forward(first, X))
    with config.configure(cache_dir=""):
        got = [PreparedModel(g, 7, 2).evaluate(X, 1) for g in (first, again)]
    for a, b in zip(*got):
        np.testing.assert_array_equal(a, b)


def test_changed_bytes_damaged_entries_and_no_cache(tmp_path):
    path = str(tmp_path / "m.onnx")
    models.save(models.mlp((6, 5, 3), seed=1), path)
    with config.configure(cache_dir=str(tmp_path / "c")):
        a = load_model(path)
        models.save(models.mlp((6, 5, 3), seed=2), path)  # same name, other weights
        b = load_model(path)
        assert not np.array_equal(a.nodes[0].params["W"], b.nodes[0].params["W"])
        for name in os.listdir(tmp_path / "c"):  # damage every entry: imported again
            with open(tmp_path / "c" / name, "wb") as f:
                f.write(b"PK\x03\x04 not a zip")
        c = load_model(path)
        np.testing.assert_array_equal(c.nodes[0].params["W"], b.nodes[0].params["W"])
    with config.configure(cache_dir=""):
        d = load_model(path)
    np.testing.assert_array_equal(d.nodes[0].params["W"], b.nodes[0].params["W"])
