"""Sixth adversarial pass, area 3: damaged and hostile entries of the per-model cache folder
(LRMPI_CACHE_DIR): packed weights flipped, truncated, replaced by a folder; entries swapped
between two models; an entry that is a link to a user's file. The README: the packed
weights are "checked by their digest on every load" (design.md: "a damaged entry is packed
again, never used"); design.md: a bound never depends "on what a cache held"; the third
pass: damaged cache entries never change numbers."""
import os

import numpy as np
import pytest

from adversary import assert_ok, assert_one_error, bounded, digest, swap
from adversary6 import BIG_ARGS, assert_same, copy_cache, entries, infer, results


def _flip(path, at=None):
    size = os.path.getsize(path)
    at = size // 2 if at is None else at
    with open(path, "r+b") as f:
        f.seek(at)
        c = f.read(1)
        f.seek(at)
        f.write(bytes([c[0] ^ 0x01]))


@pytest.mark.parametrize("damage", ["flip_weights", "truncate_weights", "flip_index",
                                    "weights_empty"])
def test_packed_weights_damaged_are_packed_again(tmp_path, big, damage):
    """The packed weights' .npy (a byte flipped in the middle, cut to a third, emptied) or
    their .npz index (a byte flipped): the next run computes the same numbers bit for bit
    (or says one line), and the entry is never used as it is."""
    model, data, seed, ref = big
    cache = copy_cache(seed, tmp_path / "cache")
    npy = [p for p in entries(cache, "packed") if p.endswith(".npy")][0]
    npz = [p for p in entries(cache, "packed") if p.endswith(".npz")][0]
    if damage == "flip_weights":
        _flip(npy)
    elif damage == "truncate_weights":
        os.truncate(npy, os.path.getsize(npy) // 3)
    elif damage == "weights_empty":
        os.truncate(npy, 0)
    else:
        _flip(npz)
    out = tmp_path / "s.h5"
    r = bounded("infer", model, data, "-o", out, *BIG_ARGS, env={"LRMPI_CACHE_DIR": str(cache)},
                limit=120)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    assert_ok(r)
    assert_same(out, ref)


def test_packed_weights_replaced_by_a_folder(tmp_path, big):
    """The packed weights' .npy replaced by a folder holding a file of the user's: the job
    completes with the same numbers; the folder and its file stay."""
    model, data, seed, ref = big
    cache = copy_cache(seed, tmp_path / "cache")
    npy = [p for p in entries(cache, "packed") if p.endswith(".npy")][0]
    os.remove(npy)
    os.mkdir(npy)
    (tmp_path / "cache" / os.path.basename(npy) / "mine.txt").write_text("mine")
    out = tmp_path / "s.h5"
    r = bounded("infer", model, data, "-o", out, *BIG_ARGS, env={"LRMPI_CACHE_DIR": str(cache)},
                limit=120)
    assert_ok(r)
    assert_same(out, ref)
    assert (tmp_path / "cache" / os.path.basename(npy) / "mine.txt").read_text() == "mine"


def _run_with_swapped(tmp_path, m1, m2, data, kind):
    """m1 and m2 run with one cache, their `kind` entries swapped, m1 run again: the
    checkpoint of that run, or None when it was refused in one line."""
    cache = tmp_path / "cache"
    assert_ok(infer(m1, data, tmp_path / "a.h5", cache=cache))
    assert_ok(infer(m2, data, tmp_path / "b.h5", cache=cache))
    pair = entries(cache, kind)
    assert len(pair) == 2, os.listdir(cache)
    swap(*pair)
    out = tmp_path / "s.h5"
    r = infer(m1, data, out, cache=cache)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return None
    return out


def test_graph_entries_swapped_between_two_models(tmp_path, tiny):
    """Two models of one architecture run with one cache; their `graph` entries (the
    imported graphs) then swap names. The first model's next run must compute its own
    scores (bit-identical to a run without a cache) or refuse in one line: a swapped entry
    is another model's work (the third pass: damaged cache entries never change numbers)."""
    m1, m2, data, ref1 = tiny
    out = _run_with_swapped(tmp_path, m1, m2, data, "graph")
    if out is not None:
        assert_same(out, ref1)


def _float64_logits(model, X):
    import onnx
    from onnx import numpy_helper
    W = {t.name: numpy_helper.to_array(t).astype(np.float64)
         for t in onnx.load(str(model)).graph.initializer}
    h = np.maximum(X.astype(np.float64) @ W["W0"] + W["b0"], 0)
    return h @ W["W1"] + W["b1"]


def test_norms_entries_swapped_between_two_models_bounds_stay_rigorous(tmp_path, tiny):
    """Two models of one architecture, the second the first's weights / 50, run with one
    cache; their `norms3` entries then swap names. The first model's next run: every
    resolution's bound still covers |scores - float64 model| (README: "Bounds on every
    logit, per sample, against the float64 model"; design.md: a radius never depends "on
    what a cache held"), and its bounds equal a run without a cache's."""
    import onnx
    from onnx import numpy_helper
    m1, _, data, ref1 = tiny
    m = onnx.load(m1)
    for t in m.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) / 50, t.name))
    small = tmp_path / "small.onnx"
    onnx.save(m, str(small))
    out = _run_with_swapped(tmp_path, m1, small, data, "norms3")
    if out is None:
        return
    exact = _float64_logits(m1, np.load(data))
    for k, res in results(out).items():
        err = np.abs(res["scores"] - exact).max(axis=1)
        assert np.all(err <= res["bound"]), (k, err, res["bound"])
    assert_same(out, ref1)


def test_graph_entry_is_a_link_to_a_user_file(tmp_path, tiny):
    """The model's graph entry replaced by a symbolic link to a user's file: the run computes
    the model's own numbers and the user's file is never written through the link."""
    m1, _, data, ref1 = tiny
    cache = tmp_path / "cache"
    assert_ok(infer(m1, data, tmp_path / "a.h5", cache=cache))
    [entry] = entries(cache, "graph")
    mine = tmp_path / "mine.npz"
    np.savez(mine, x=np.arange(3))
    before = digest(mine)
    os.remove(entry)
    os.symlink(mine, entry)
    out = tmp_path / "s.h5"
    r = infer(m1, data, out, cache=cache)
    assert_ok(r)
    assert_same(out, ref1)
    assert digest(mine) == before


def test_norms_entry_of_another_architecture_under_the_name(tmp_path, rng, tiny):
    """The norms entry of a model of another architecture (other layer sizes) renamed to the
    first model's name: the run's bounds are its own (bit-identical to no cache), or one
    line; never a traceback."""
    from adversary import mlp_onnx
    m1, _, data, ref1 = tiny
    cache = tmp_path / "cache"
    other = mlp_onnx(tmp_path / "o.onnx", rng, sizes=(16, 20, 4))
    assert_ok(infer(m1, data, tmp_path / "a.h5", cache=cache))
    [mine] = entries(cache, "norms3")
    os.remove(mine)
    assert_ok(infer(other, data, tmp_path / "b.h5", cache=cache))
    [theirs] = entries(cache, "norms3")
    os.rename(theirs, mine)
    out = tmp_path / "s.h5"
    r = infer(m1, data, out, cache=cache)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    assert_same(out, ref1)
    assert results(out)["003"]["bound"].shape == results(ref1)["003"]["bound"].shape
