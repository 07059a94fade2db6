"""The fused kernels' packed weights, kept in the cache folder (lrmpi.cache).

A rank that packs a model it packed before maps the packed weights from the page
cache instead of encoding and packing them again: a ResNet-50's 100 MB of digit
planes and 100 MB of packed weights, all fresh memory (1-2.6 s per GB to first
touch here), were 0.2-0.4 s of every rank's first resolution.

The key names everything the packing depends on: every linear/conv node's weights
(W, exactly), operator, parameters and input shape, the bits and planes, the kernel
ISA (each packs its own layout) and lrmpi's version (cache.digest). Two files: the
packed bytes of every node in one int8 .npy (mapped copy-on-write; each node's run
starts 64-byte aligned, as the kernels read it; the .npy header keeps the data
64-byte aligned in the file) and an .npz with each node's offset and size, its
channel exponents and the digest of the bytes, compared on every load, so a
damaged or foreign entry reads as absent. Small models are not kept: packing them
costs less than the files.
"""
import os

import numpy as np

from lrmpi import cache

MIN_BYTES = 16 << 20  # packed weights below this are packed again each time
ALIGN = 64


def worth(weights):
    """Whether a model's packed weights are large enough to keep (and to look for)."""
    return sum(w.planes * w.W2.size for w in weights.values()) >= MIN_BYTES


def key(graph, weights, isa):
    """The entry's key for the packing of `graph`'s linear/conv nodes on `isa` by this
    build of the kernels (its file's size and time: a rebuilt packing never meets an
    entry of the old one)."""
    parts = [isa, _build()]
    for n in graph.linear:
        w = weights[n.output]
        parts.append((n.op, n.output, tuple(graph.shapes[n.inputs[0]]), w.bits, w.planes,
                      sorted((k, v) for k, v in n.params.items()
                             if not isinstance(v, np.ndarray)), w.W2))
    return cache.digest(*parts)


def _build():
    import os

    from lrmpi.numerics import kernels_nn
    try:
        st = os.stat(kernels_nn._k.__file__)
    except (AttributeError, OSError):
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def _entries(k):
    """(the packed bytes' .npy, its keyed .npz index) of entry `k`."""
    return cache.MappedEntry("packed", k), cache.Entry("packed", k)


def load(k):
    """{node output: (packed weights, channel exponents)} of entry `k`, or None."""
    data, meta = (e.load() for e in _entries(k))
    if meta is None or data is None or data.dtype != np.int8 or data.ndim != 1:
        return None
    try:
        if str(meta["digest"]) != cache.array_digest(data):
            return None
        out = {}
        for i, (name, at, size) in enumerate(zip(meta["names"].tolist(),
                                                 meta["offsets"].tolist(),
                                                 meta["sizes"].tolist())):
            if at % ALIGN or at + size > len(data):
                return None
            out[name] = (data[at:at + size], np.ascontiguousarray(meta[f"f{i}"], np.int32))
    except (KeyError, ValueError):
        return None
    watch = cache.mapped_watch(data, str(meta["digest"]))  # unchanged(k) compares with it
    if watch is None:
        return None
    if k in _watched:  # loaded again (another model of the same weights): one fd a key
        os.close(_watched[k][0])
    _watched[k] = watch
    return out


_watched = {}  # key -> (fd of its mapped .npy, its ctime then, the mapping, its digest)


def unchanged(k):
    """Raise InputError if entry k's packed weights, mapped by load(k), were changed in
    place since (lrmpi only ever replaces an entry whole; a mapping of the file sees a
    write into it, so the kernels would compute with other weights): a fstat, and a
    digest only when the file's ctime moved."""
    if k in _watched:
        _watched[k] = cache.mapped_unchanged(_watched[k], "its packed weights")


def store(packed, entries):
    """Keep {node output: (packed weights, channel exponents)} in `entries` (_entries)."""
    data, meta = entries
    stored = data.store_runs([w for w, _ in packed.values()], ALIGN)
    if stored is None:
        return False
    offsets, digest = stored
    return meta.store({
        "names": np.array(list(packed)), "offsets": np.array(offsets, np.int64),
        "sizes": np.array([len(w) for w, _ in packed.values()], np.int64),
        "digest": np.array(digest), **{f"f{i}": f for i, (_, f) in enumerate(packed.values())}})


def store_later(k, packed):
    """store() on a thread of its own (cache.later): the rank computes meanwhile (the
    file is written from the packed arrays the kernels read, which nothing changes)."""
    cache.later(store, packed, _entries(k), name="lrmpi-packed-cache")
