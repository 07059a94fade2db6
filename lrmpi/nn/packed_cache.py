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
import numpy as np

from lrmpi import cache

MIN_BYTES = 16 << 20  # packed weights below this are packed again each time
ALIGN = 64


def key(graph, weights, isa):
    """The entry's key for the packing of `graph`'s linear/conv nodes on `isa`."""
    parts = [isa]
    for n in graph.linear:
        w = weights[n.output]
        parts.append((n.op, n.output, tuple(graph.shapes[n.inputs[0]]), w.bits, w.planes,
                      sorted((k, v) for k, v in n.params.items()
                             if not isinstance(v, np.ndarray)), w.W2))
    return cache.digest(*parts)


def load(k):
    """{node output: (packed weights, channel exponents)} of entry `k`, or None."""
    meta = cache.Entry("packed", k).load()
    data = cache.MappedEntry("packed", k).load()
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
        return out
    except (KeyError, ValueError):
        return None


def store(k, packed):
    """Keep {node output: (packed weights, channel exponents)} under `k` (if it pays)."""
    total = sum(-(-len(w) // ALIGN) * ALIGN for w, _ in packed.values())
    if total < MIN_BYTES:
        return False
    data = np.zeros(total, np.int8)
    names, offsets, sizes, at = [], [], [], 0
    for name, (w, _) in packed.items():
        data[at:at + len(w)] = w
        names.append(name)
        offsets.append(at)
        sizes.append(len(w))
        at += -(-len(w) // ALIGN) * ALIGN
    if not cache.MappedEntry("packed", k).store(data):
        return False
    return cache.Entry("packed", k).store({
        "names": np.array(names), "offsets": np.array(offsets, np.int64),
        "sizes": np.array(sizes, np.int64), "digest": np.array(cache.array_digest(data)),
        **{f"f{i}": f for i, (_, f) in enumerate(packed.values())}})
