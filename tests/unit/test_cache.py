"""lrmpi.cache: keys name their inputs, entries are atomic and optional."""
import os

import numpy as np
import pytest

from lrmpi import cache, config


def test_digest_changes_with_every_part():
    a = np.arange(6, dtype=np.int8)
    base = cache.digest("graph", a, (1, 2), b"xy")
    assert base == cache.digest("graph", a.copy(), (1, 2), b"xy")
    assert base != cache.digest("graph", a.astype(np.int16), (1, 2), b"xy")
    assert base != cache.digest("graph", a.reshape(2, 3), (1, 2), b"xy")
    assert base != cache.digest("graph", a, (1, 3), b"xy")
    assert base != cache.digest("graph", a, (1, 2), b"xz")
    # part boundaries count: ("ab", "c") is not ("a", "bc")
    assert cache.digest("ab", "c") != cache.digest("a", "bc")


def test_store_load_roundtrip_and_damage(tmp_path):
    with config.configure(cache_dir=str(tmp_path / "c")):
        e = cache.Entry("norms", cache.digest("m"))
        assert e.load() is None
        assert e.store({"S": np.array(2.5), "rows": np.arange(3.0)})
        got = e.load()
        assert float(got["S"]) == 2.5 and got["rows"].tolist() == [0.0, 1.0, 2.0]
        assert not [f for f in os.listdir(tmp_path / "c") if ".tmp." in f]
        with open(e.path, "wb") as f:  # damaged: read as absent, never an error
            f.write(b"PK\x03\x04 not a zip")
        assert e.load() is None


def test_disabled_or_unwritable_cache_is_optional(tmp_path):
    with config.configure(cache_dir=""):
        e = cache.Entry("graph", "k")
        assert e.path is None and e.load() is None and e.store({"x": np.zeros(1)}) is False
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        with config.configure(cache_dir=str(ro / "sub")):
            e = cache.Entry("graph", "k")
            if os.access(ro, os.W_OK):  # root ignores the mode: nothing to check
                return
            assert e.store({"x": np.zeros(1)}) is False and e.load() is None
    finally:
        os.chmod(ro, 0o700)


def test_a_killed_writer_s_temporary_file_is_removed_by_the_next_store(tmp_path):
    from lrmpi import config
    from lrmpi.cache import Entry
    with config.configure(cache_dir=str(tmp_path)):
        e = Entry("norms3", "0" * 32)
        here = f"{e.path}.tmp.{cache._HOST}."
        dead = f"{here}{2**22 + 12345}"  # above any pid this kernel hands out
        dead_thread = f"{here}{2**22 + 12346}-140230"  # a thread of such a process
        kept = [f"{here}1",              # init: alive, not ours to touch
                f"{here}{'9' * 30}",      # no pid at all
                f"{e.path}.tmp.otherhost.{2**22 + 12345}"]  # another node's: never
        for p in [dead, dead_thread, *kept]:
            open(p, "wb").close()
        assert e.store({"x": np.arange(3)})
        assert not os.path.exists(dead) and not os.path.exists(dead_thread)
        assert all(map(os.path.exists, kept))
        assert list(e.load()["x"]) == [0, 1, 2]


def test_an_entry_renamed_onto_another_key_reads_as_absent(tmp_path):
    """Another model's entry under this model's name (a swap, a copy): never used."""
    with config.configure(cache_dir=str(tmp_path)):
        a, b = cache.Entry("norms3", "a" * 32), cache.Entry("norms3", "b" * 32)
        assert a.store({"x": np.arange(3)}) and b.store({"x": np.arange(4)})
        os.replace(a.path, tmp_path / "swap")
        os.replace(b.path, a.path)
        assert a.load() is None
        os.replace(tmp_path / "swap", a.path)
        assert list(a.load()) == ["x"] and len(a.load()["x"]) == 3


def test_an_entry_edited_with_its_key_intact_reads_as_absent(tmp_path):
    """Values changed in an entry (a norm scaled down: bounds below the error), or an
    array added or removed, with its kind and key kept: absent, never used."""
    with config.configure(cache_dir=str(tmp_path / "c")):
        e = cache.Entry("norms3", cache.digest("m"))
        assert e.store({"S": np.array(2.5), "rows": np.arange(3.0)})
        with np.load(e.path) as f:
            arrays = {k: f[k] for k in f.files}
        for edit in ({"S": np.array(0.25)}, {"extra": np.zeros(2)}):
            np.savez(e.path, **{**arrays, **edit})
            assert e.load() is None
        np.savez(e.path, **{k: v for k, v in arrays.items() if k != "rows"})
        assert e.load() is None
        np.savez(e.path, **arrays)  # put back as it was: read again
        assert float(e.load()["S"]) == 2.5


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (3 << 20) + 17])
def test_file_digest_is_the_digest_of_the_bytes(tmp_path, size):
    """Read by chunks into one buffer: the digest of the whole bytes, whatever the
    file's size against the chunk (empty, a part, one, several and a part)."""
    from lrmpi.digests import Digest
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    f = tmp_path / "m.onnx"
    f.write_bytes(data)
    h = Digest()
    h.update(data)
    assert cache.file_digest(str(f)) == cache._hex(h)
