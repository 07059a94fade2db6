"""Models from files, the imported graph kept in the cache folder (lrmpi.cache).

Importing an ONNX model decodes its protobuf (onnx_proto.py: onnx's generated
classes, without the rest of the onnx package) and turns its nodes into a graph;
the graph it yields is a few arrays and a JSON description (graph.to_arrays),
kept with the tensors' shapes. So a model seen before is read back from the
cache, keyed by the XXH3-128 digest of the model file's bytes, the importer's options
(those given: `output=None` is the default, the same key as no option) and
lrmpi's version: the importer runs only for a model never seen (or without a
cache folder). A damaged entry reads as absent.
"""
import json
import os

import numpy as np

from lrmpi import cache
from lrmpi.errors import InputError
from lrmpi.nn import graph as G


def load_model(path, **options):
    """A graph from `.onnx` (cached) or lrmpi's own `.npz` (see onnx_import.load_model)."""
    path = str(path)
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise InputError(f"model {path} is not a regular file (a pipe or a device?)")
    if not (path.endswith(".onnx") and os.path.isfile(path)):
        return _import(path, options)
    given = sorted((k, v) for k, v in options.items() if v is not None)
    try:
        key = cache.file_digest(path)
    except OSError as exc:  # unreadable (permissions): one line, as the importer says it
        raise InputError(f"model {path}: cannot read it ({exc.strerror or exc})") from None
    entry = cache.Entry("graph", cache.digest(key, given))
    saved = entry.load()
    if saved is not None:
        try:
            shapes = {k: tuple(v) for k, v in json.loads(str(saved.pop("shapes"))).items()}
            return G.from_arrays(saved).validate(shapes)
        except Exception:  # noqa: BLE001 -- a damaged or foreign entry: import again
            pass
    g = _import(path, options)
    try:
        arrays = G.to_arrays(g)
        arrays["shapes"] = np.array(json.dumps({k: list(v) for k, v in g.shapes.items()}))
    except TypeError:  # a parameter JSON cannot hold: not cached
        return g
    entry.store(arrays)
    return g


def _import(path, options):
    from lrmpi.nn.onnx_import import load_model as onnx_load_model
    return onnx_load_model(path, **options)
