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
from lrmpi.nn.loading import load_model, settle  # noqa: E402
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
        settle(load_model(path))          # stores
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
        first = settle(load_model(path, output=logits))  # stored (on a thread) by now
        kept = {n: os.stat(tmp_path / "c" / n).st_mtime_ns for n in os.listdir(tmp_path / "c")}
        assert kept
        again = load_model(path, output=logits)
        assert {n: os.stat(tmp_path / "c" / n).st_mtime_ns
                for n in os.listdir(tmp_path / "c")} == kept  # read back, not stored again
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
        a = settle(load_model(path))
        models.save(models.mlp((6, 5, 3), seed=2), path)  # same name, other weights
        b = settle(load_model(path))
        assert not np.array_equal(a.nodes[0].params["W"], b.nodes[0].params["W"])
        for name in os.listdir(tmp_path / "c"):  # damage every entry: imported again
            with open(tmp_path / "c" / name, "wb") as f:
                f.write(b"PK\x03\x04 not a zip")
        c = load_model(path)
        np.testing.assert_array_equal(c.nodes[0].params["W"], b.nodes[0].params["W"])
    with config.configure(cache_dir=""):
        d = load_model(path)
    np.testing.assert_array_equal(d.nodes[0].params["W"], b.nodes[0].params["W"])


def test_large_parameters_are_mapped_from_one_checked_file(tmp_path):
    """Parameters of 64 kB and more come back as read-only views of the entry's .npy
    (what parallel/shipping.py sends as the file's name); a changed byte in that file
    makes the entry absent (its digest), a truncated one too: imported again, the
    same values."""
    from lrmpi.numerics.buffers import file_region
    path = models.save(models.mlp((300, 200, 10), seed=3), str(tmp_path / "m.onnx"))
    direct = import_onnx(path)
    with config.configure(cache_dir=str(tmp_path / "c")):
        first = load_model(path)  # imported: stored on a thread
        assert file_region(first.nodes[0].params["W"]) is None
        assert settle(first) is first  # ... then its parameters mapped from the entry
        W = first.nodes[0].params["W"]
        region = file_region(W)
        assert region is not None and region[0].endswith(".npy") and region[2] == W.nbytes
        assert not W.flags.writeable
        assert file_region(first.nodes[0].params["b"]) is None  # small: in the .npz
        np.testing.assert_array_equal(W, direct.nodes[0].params["W"])
        with open(region[0], "r+b") as f:  # one byte of W changed in the file
            f.seek(region[1] + 8)
            byte = f.read(1)
            f.seek(region[1] + 8)
            f.write(bytes([byte[0] ^ 1]))
        again = settle(load_model(path))  # the digest differs: imported and stored again
        np.testing.assert_array_equal(again.nodes[0].params["W"], direct.nodes[0].params["W"])
        del again  # a file truncated under a mapping faults its readers (SIGBUS)
        with open(region[0], "r+b") as f:
            f.truncate(region[1] + 100)
        third = load_model(path)
        np.testing.assert_array_equal(third.nodes[0].params["W"], direct.nodes[0].params["W"])
        assert file_region(settle(third).nodes[0].params["W"]) is not None
        fourth = load_model(path)  # read from the cache: mapped at once
        assert file_region(fourth.nodes[0].params["W"]) is not None


def test_a_cached_copy_changed_in_place_under_a_job_is_noticed(tmp_path):
    """lrmpi replaces entries whole; a .npy changed in place (its mtime kept) while a
    graph is mapped from it changes that graph's values: unchanged(g) says so (its
    ctime moved and the digest differs), and says nothing for a mere touch."""
    from lrmpi.errors import InputError
    from lrmpi.nn.loading import unchanged
    from lrmpi.numerics.buffers import file_region
    path = models.save(models.mlp((300, 200, 10), seed=5), str(tmp_path / "m.onnx"))
    with config.configure(cache_dir=str(tmp_path / "c")):
        settle(load_model(path))
        g = load_model(path)                       # mapped from the cache
    npy, at, _ = file_region(g.nodes[0].params["W"])
    unchanged(g)
    st = os.stat(npy)
    os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns))   # ctime moves, bytes do not
    unchanged(g)
    with open(npy, "r+b") as f:
        f.seek(at + 3)
        b = f.read(1)
        f.seek(at + 3)
        f.write(bytes([b[0] ^ 0x40]))
    os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(InputError, match="changed in place while the job ran"):
        unchanged(g)


def _npy_data_offset(cache):
    """Where the data of the cache folder's one graph .npy begins."""
    npys = [n for n in os.listdir(cache) if n.endswith(".npy")]
    assert len(npys) == 1, os.listdir(cache)
    return np.load(os.path.join(cache, npys[0]), mmap_mode="r").offset


def test_a_new_import_makes_its_weights_in_the_entry(tmp_path):
    """An imported model's large weights are made in the cache entry's own file (one
    page of header, then each weight from a page boundary: no copy of them later); the
    entry read back computes what the import does."""
    path = models.save(models.vgg_small(), str(tmp_path / "m.onnx"))
    cache = str(tmp_path / "c")
    with config.configure(cache_dir=cache):
        g = settle(load_model(path))
        again = load_model(path)
    assert _npy_data_offset(cache) == 4096
    direct = import_onnx(path)
    X = np.random.default_rng(1).standard_normal((2,) + direct.input_shape)
    want = ops.forward(direct, X)
    np.testing.assert_array_equal(ops.forward(g, X), want)
    np.testing.assert_array_equal(ops.forward(again, X), want)
    assert not any(".tmp." in n for n in os.listdir(cache))


def test_no_room_for_the_entry_copies_the_weights_in_later(tmp_path, monkeypatch):
    """A file system that reserves no space for the entry (a full disk): the weights
    are made in memory and the entry written from them, as before."""
    import errno

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    path = models.save(models.vgg_small(), str(tmp_path / "m.onnx"))
    cache = str(tmp_path / "c")
    with config.configure(cache_dir=cache):
        g = settle(load_model(path))
    assert _npy_data_offset(cache) < 4096
    direct = import_onnx(path)
    X = np.random.default_rng(2).standard_normal((2,) + direct.input_shape)
    np.testing.assert_array_equal(ops.forward(g, X), ops.forward(direct, X))
    assert not any(".tmp." in n for n in os.listdir(cache))


def test_a_model_refused_after_its_large_weights_leaves_no_file(tmp_path):
    from onnx_graphs import model, node

    from lrmpi.errors import InputError
    W = np.random.default_rng(3).standard_normal((64, 16, 3, 3)).astype(np.float32)  # 74 kB
    path = model(tmp_path / "lrn.onnx", [node("Conv", ["x", "W"], "c"),
                                         node("LRN", ["c"], "y", size=3)],
                 {"W": W}, (16, 8, 8))
    cache = str(tmp_path / "c")
    with config.configure(cache_dir=cache), pytest.raises(InputError, match="LRN"):
        load_model(path)
    assert not os.path.exists(cache) or os.listdir(cache) == []


def _external_model(folder, seed):
    from onnx_graphs import external_model
    return external_model(folder, seed)


def test_external_data_changed_since_the_entry_is_imported_again(tmp_path):
    """The entry's key is the model file's digest, which does not cover its external
    data: the entry keeps the data's digests and is not used once they differ (a run
    with another w.bin beside the same m.onnx computed the old weights)."""
    a, b = _external_model(str(tmp_path / "a"), 1), _external_model(str(tmp_path / "b"), 2)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()                     # the same .onnx bytes
    X = np.random.default_rng(0).standard_normal((2, 4))
    with config.configure(cache_dir=str(tmp_path / "c")):
        first = ops.forward(settle(load_model(a)), X)
        os.replace(str(tmp_path / "b" / "w.bin"), str(tmp_path / "a" / "w.bin"))
        again = ops.forward(settle(load_model(a)), X)
        cached = ops.forward(load_model(a), X)            # the new entry, read back
    np.testing.assert_array_equal(again, ops.forward(import_onnx(a), X))
    np.testing.assert_array_equal(cached, again)
    assert not np.array_equal(first, again)


def test_a_model_replaced_while_it_is_imported_is_not_kept_under_the_old_digest(
        tmp_path, monkeypatch):
    """The file is replaced between its digest and its import (a training loop saving
    it): the job computes the model it read, and no entry keyed by the first file's
    digest holds the other model's graph (every later run of that file computed it)."""
    from lrmpi import cache
    pa = models.save(models.mlp((4, 5, 3), seed=1), str(tmp_path / "a.onnx"))
    pb = models.save(models.mlp((4, 5, 3), seed=2), str(tmp_path / "b.onnx"))
    path = str(tmp_path / "m.onnx")
    with open(pa, "rb") as f, open(path, "wb") as g:
        g.write(f.read())
    digest = cache.file_digest

    def then_replaced(p, *args, **kw):
        out = digest(p, *args, **kw)
        if p == path:
            with open(pb, "rb") as f, open(path + ".new", "wb") as g:
                g.write(f.read())
            os.replace(path + ".new", path)
        return out
    X = np.random.default_rng(0).standard_normal((2, 4))
    with config.configure(cache_dir=str(tmp_path / "c")):
        monkeypatch.setattr(cache, "file_digest", then_replaced)
        np.testing.assert_array_equal(ops.forward(settle(load_model(path)), X),
                                      ops.forward(import_onnx(pb), X))
        monkeypatch.setattr(cache, "file_digest", digest)
        with open(pa, "rb") as f, open(path + ".new", "wb") as g:
            g.write(f.read())
        os.replace(path + ".new", path)                   # model A again
        np.testing.assert_array_equal(ops.forward(settle(load_model(path)), X),
                                      ops.forward(import_onnx(pa), X))


def test_external_data_changed_while_it_is_read_is_refused(tmp_path, monkeypatch):
    from lrmpi import cache
    from lrmpi.errors import InputError
    path = _external_model(str(tmp_path / "a"), 1)
    real, calls = cache.bytes_digest, []

    def drifting(data):   # the second digest of w.bin (after its tensors) differs
        calls.append(1)
        return real(data) + ("x" if len(calls) == 2 else "")
    monkeypatch.setattr(cache, "bytes_digest", drifting)
    with pytest.raises(InputError, match="changed while it was read"):
        import_onnx(path)
