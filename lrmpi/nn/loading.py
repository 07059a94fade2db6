"""Models from files, the imported graph kept in the cache folder (lrmpi.cache).

Importing an ONNX model decodes its protobuf (onnx_proto.py: onnx's generated
classes, without the rest of the onnx package) and turns its nodes into a graph;
the graph it yields is a few arrays and a JSON description (graph.to_arrays),
kept with the tensors' shapes. So a model seen before is read back from the
cache, keyed by the XXH3-128 digest of the model file's bytes, the importer's options
(those given: `output=None` is the default, the same key as no option) and
lrmpi's version: the importer runs only for a model never seen (or without a
cache folder). A damaged entry reads as absent.

An entry is two files: the parameters of 64 kB and more, float64, one after the
other in one .npy (each from a 64-byte boundary), and a keyed .npz with the rest,
the JSON, each large parameter's place and the .npy's digest (compared on every
read). The .npy is mapped read-only, not read: a ResNet-50's 200 MB of weights
were 0.23 s to read into fresh memory and 0.41 s more to send to the ranks, which
now map the same file themselves (parallel/shipping.py).

A model imported here is stored on a thread of its own (writing 200 MB into the
page cache took 0.4 s) while the caller goes on with the imported graph; settle(g)
waits for that entry and puts its mapped views in g's place (the same values), for
a graph about to be sent to the ranks.
"""
import json
import os
import weakref

import numpy as np

from lrmpi import cache
from lrmpi.errors import InputError
from lrmpi.nn import graph as G
from lrmpi.numerics.buffers import mapped_file

MAPPED_BYTES = 1 << 16  # parameters from this size on are kept in the mapped .npy
ALIGN = 64


def load_model(path, **options):
    """A graph from `.onnx` (cached) or lrmpi's own `.npz` (see onnx_import.load_model).
    Its parameters are not to be changed in place: a graph read from the cache has them
    read-only, and a graph imported now is being written to the cache meanwhile."""
    path = str(path)
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise InputError(f"model {path} is not a regular file (a pipe or a device?)")
    if not (path.endswith(".onnx") and os.path.isfile(path)):
        return _import(path, options)
    given = sorted((k, v) for k, v in options.items() if v is not None)
    try:
        digest = cache.file_digest(path)
    except OSError as exc:  # unreadable (permissions): one line, as the importer says it
        raise InputError(f"model {path}: cannot read it ({exc.strerror or exc})") from None
    entries = _entries(cache.digest(FORMAT, digest, given))
    g = _read(entries)
    if g is not None and _external_unchanged(path, g.sources[1]):
        return g
    # the large weights are made in the new entry's file (its pages, written once)
    arena = entries[0].arena(MAPPED_BYTES) if path.endswith(".onnx") else None
    try:
        g = _import(path, {**options, "arena": arena})
    except BaseException:
        if arena is not None:
            arena.discard()
        raise
    if g.sources[0] != digest:  # the file was replaced between its digest and its import:
        if arena is not None:   # its graph is not the one of that digest (not kept)
            arena.discard()
        return g
    for k in [k for k, v in _pending.items() if v[0]() is None]:  # graphs gone since
        del _pending[k]
    kept = {}
    _pending[id(g)] = (weakref.ref(g), kept,
                       cache.later(_keep, g, entries, kept, arena, name="lrmpi-graph-cache"))
    return g


_pending = {}  # id(graph) -> (the graph, weakly; {"graph": its entry read back}, the writer)
# in every graph entry's key: entries of before external data was part of them are not read
FORMAT = "graph entry 2"


def _external_unchanged(path, external):
    """Whether the external data files an entry's graph was imported from (its
    {location: digest}) still hold those bytes: the model's file names them, and its
    digest, the entry's key, does not cover them."""
    if not external:
        return True
    from lrmpi.nn.onnx_proto import external_file
    base = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    for loc, digest in external.items():
        try:
            full = external_file(base, loc)
            if full is None or cache.file_digest(full) != digest:
                return False
        except (OSError, ValueError):
            return False
    return True


def settle(g, should_stop=None):
    """g, its large parameters replaced by the mapped views of its new cache entry
    once that is written (the same values: parallel/shipping.py then sends them as
    the file's name); g unchanged when the entry could not be kept. `should_stop()`
    is asked every 0.2 s while the entry is written."""
    pending = _pending.pop(id(g), None)
    if pending is None or pending[0]() is not g:
        return g
    _, kept, thread = pending
    while thread.is_alive():
        if should_stop is not None:
            should_stop()
        thread.join(0.2)
    stored = kept.get("graph")
    if stored is not None and len(stored.nodes) == len(g.nodes) and id(stored) in _watched:
        for n, m in zip(g.nodes, stored.nodes):
            for k, v in m.params.items():
                old = n.params.get(k)
                if isinstance(v, np.ndarray) and isinstance(old, np.ndarray) and \
                        v.shape == old.shape and v.dtype == old.dtype:
                    n.params[k] = v
        _, _, data, digest = _watched[id(stored)]
        _watch(g, data, digest)
    return g


def _keep(g, entries, kept, arena=None):
    if _store(g, entries, arena):
        kept["graph"] = stored = _read(entries, checked=True)
        if stored is not None and arena is not None and id(stored) in _watched:
            # g's weights are the entry's own pages (shared, not copied): a change of
            # the file in place is g's too, and unchanged(g) must see it as it does
            # for the entry read back
            _, _, data, digest = _watched[id(stored)]
            _watch(g, data, digest)


def _import(path, options):
    from lrmpi.nn.onnx_import import load_model as onnx_load_model
    return onnx_load_model(path, **options)


def _entries(key):
    """(the large parameters' .npy, the keyed .npz) of a graph entry."""
    return cache.MappedEntry("graph", key), cache.Entry("graph", key)


def _read(entries, checked=False):
    """The graph kept in `entries`, or None (absent, damaged, another's). `checked`:
    its values were validated before they were stored (no pass over them for NaN)."""
    data, meta = entries[0].load(mode="r"), entries[1].load()
    if meta is None:
        return None
    try:
        places = json.loads(str(meta.pop("places")))
        digest = str(meta.pop("digest"))
        if places:
            if data is None or data.dtype != np.float64 or data.ndim != 1 \
                    or cache.array_digest(data) != digest:
                return None
            for name, at, shape in places:
                size = int(np.prod(shape))
                if at < 0 or at % (ALIGN // 8) or at + size > len(data):
                    return None
                meta[name] = data[at:at + size].reshape(shape)
        shapes = {k: tuple(v) for k, v in json.loads(str(meta.pop("shapes"))).items()}
        external = json.loads(str(meta.pop("external")))
        if not (isinstance(external, dict) and all(isinstance(v, str) for v in external.values())):
            return None
        g = G.from_arrays(meta).validate(shapes, finite=not checked)
        g.sources = (None, external)
    except Exception:  # noqa: BLE001 -- a damaged or foreign entry: import again
        return None
    return _watch(g, data, digest) if places else g


_watched = {}  # id(graph) -> (fd of its mapped .npy, its ctime, the mapping, its digest)


def _watch(g, data, digest):
    """Keep an eye on the file g's parameters are mapped from: lrmpi replaces entries
    whole (a new inode: a mapping keeps the old one), but a file changed in place would
    change g's values under a job (unchanged(g) says so). The file's ctime moves with
    any write (a kept mtime too), so a digest is computed only then. g, or None if the
    name no longer holds the file mapped."""
    try:
        fd = os.open(data.filename, os.O_RDONLY)
    except OSError:
        return None
    st = os.fstat(fd)
    mapped = mapped_file(data.ctypes.data)
    if mapped is not None and mapped[1] != st.st_ino:  # replaced since it was mapped (the
        os.close(fd)  # inode only: overlayfs shows its own device to stat, not to maps)
        return None
    _watched[id(g)] = (fd, st.st_ctime_ns, data, digest)
    weakref.finalize(g, _unwatch, id(g), fd)
    return g


def _unwatch(key, fd):
    if _watched.get(key, (None,))[0] == fd:
        del _watched[key]
    os.close(fd)


def unchanged(g):
    """Raise InputError if the file g's large parameters are mapped from was changed in
    place since it was read (its digest differs); nothing for other graphs."""
    if id(g) in _watched:
        _watched[id(g)] = cache.mapped_unchanged(_watched[id(g)], "its copy")


def _store(g, entries, arena=None):
    """Keep graph `g` in `entries`; False when it cannot be kept (a parameter JSON
    cannot hold, a cache folder that takes no files). `arena`: the .npy g's large
    weights were made in (cache.Arena), completed here if it holds all of them,
    else discarded and the weights copied into a new file."""
    try:
        arrays = G.to_arrays(g, narrow=False)
        shapes = json.dumps({k: list(v) for k, v in g.shapes.items()})
    except TypeError:  # a parameter JSON cannot hold: not cached
        if arena is not None:
            arena.discard()
        return False
    big = [k for k, v in arrays.items() if v.dtype == np.float64 and v.nbytes >= MAPPED_BYTES]
    digest = ""
    offsets = [arena.place(arrays[k]) for k in big] if arena is not None else [None]
    if big and None not in offsets:
        digest = arena.finish()
        if digest is None:
            return False
    elif big:
        if arena is not None:
            arena.discard()
        stored = entries[0].store_runs([arrays[k].reshape(-1) for k in big], ALIGN, np.float64)
        if stored is None:
            return False
        offsets, digest = stored
    elif arena is not None:
        arena.discard()
    places = [(k, at, list(arrays[k].shape)) for k, at in zip(big, offsets if big else [])]
    places_of = set(big)
    small = {k: v for k, v in arrays.items() if k not in places_of}
    external = json.dumps(getattr(g, "sources", (None, {}))[1])
    return entries[1].store({**small, "shapes": np.array(shapes), "external": np.array(external),
                             "places": np.array(json.dumps(places)), "digest": np.array(digest)})
