"""Reading ONNX files without importing the onnx package.

`import onnx` costs 0.6-0.8 s of CPU on these machines, nearly all of it in
ml_dtypes (which onnx.helper imports for its 8-bit float types): as much as
onnxruntime's whole start, session and run of ResNet-50. The importer needs only
the protobuf classes, which onnx generates into onnx_ml_pb2.py: that file is
loaded on its own from the onnx package's folder (protobuf registers the same
descriptors onnx would, so a later `import onnx` shares them), and tensors and
attributes are turned into numpy values here, for the data types models hold
(others go through onnx.numpy_helper). tests/unit/nn/test_onnx_proto.py checks
every conversion against onnx's own.
"""
import importlib.util
import mmap
import os
import sys

import numpy as np

from lrmpi.errors import InputError

# TensorProto.DataType -> (numpy dtype, the typed field holding it when not raw)
DTYPES = {1: (np.float32, "float_data"), 2: (np.uint8, "int32_data"),
          3: (np.int8, "int32_data"), 4: (np.uint16, "int32_data"),
          5: (np.int16, "int32_data"), 6: (np.int32, "int32_data"),
          7: (np.int64, "int64_data"), 9: (np.bool_, "int32_data"),
          10: (np.float16, "int32_data"), 11: (np.float64, "double_data"),
          12: (np.uint32, "uint64_data"), 13: (np.uint64, "uint64_data")}
EXTERNAL = 1  # TensorProto.DataLocation

_pb2 = []


def _classes():
    """onnx's generated protobuf module: onnx's own if onnx is imported, else
    onnx_ml_pb2.py loaded on its own."""
    if "onnx" in sys.modules:
        return sys.modules["onnx"]
    if not _pb2:
        spec = importlib.util.find_spec("onnx")
        if spec is None or not spec.submodule_search_locations:
            raise InputError("reading .onnx models needs the onnx package (pip install onnx)")
        path = os.path.join(spec.submodule_search_locations[0], "onnx_ml_pb2.py")
        pb = importlib.util.spec_from_file_location("lrmpi_onnx_ml_pb2", path)
        module = importlib.util.module_from_spec(pb)
        pb.loader.exec_module(module)
        _pb2.append(module)
    return _pb2[0]


def load(path, digest=False):
    """The ModelProto of an ONNX file (external data not loaded); with `digest`, also
    the digest of the bytes it was parsed from (cache.file_digest's: read once, so a
    file replaced meanwhile cannot pass for another under the digest of that one)."""
    from lrmpi.cache import bytes_digest
    proto = _classes().ModelProto()
    with open(path, "rb") as f:
        data = f.read()
    proto.ParseFromString(data)
    return (proto, bytes_digest(data)) if digest else proto


def to_array(t):
    """A TensorProto's values as a numpy array (its data type, its shape)."""
    shape = tuple(int(d) for d in t.dims)
    if t.data_type not in DTYPES or t.data_location == EXTERNAL:
        from onnx import numpy_helper  # rare types (bfloat16, float8, strings, ...)
        return numpy_helper.to_array(t)
    dtype, field = DTYPES[t.data_type]
    raw = t.raw_data  # a copy of the bytes at each access: once
    if raw:  # read-only, over those bytes: the importer copies what it keeps
        return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")) \
            .astype(dtype, copy=False).reshape(shape)
    values = np.asarray(getattr(t, field))
    if t.data_type == 10:  # float16 bits in int32_data
        values = values.astype(np.uint16).view(np.float16)
    return values.astype(dtype).reshape(shape)


def attributes(node):
    """{name: value} of a NodeProto's attributes (tensors as numpy arrays)."""
    out = {}
    for a in node.attribute:
        kind = a.type or _kind(a)
        if kind == 1:
            out[a.name] = a.f
        elif kind == 2:
            out[a.name] = a.i
        elif kind == 3:
            out[a.name] = a.s
        elif kind == 4:
            out[a.name] = to_array(a.t)
        elif kind == 6:
            out[a.name] = list(a.floats)
        elif kind == 7:
            out[a.name] = list(a.ints)
        elif kind == 8:
            out[a.name] = list(a.strings)
        else:  # graphs, sparse tensors, type protos: what no supported operator reads
            out[a.name] = a
    return out


def _kind(a):
    """The type of an attribute written without one (old exporters): the field set."""
    for kind, field in ((1, "f"), (2, "i"), (3, "s"), (4, "t")):
        if a.HasField(field):
            return kind
    for kind, field in ((6, "floats"), (7, "ints"), (8, "strings")):
        if len(getattr(a, field)):
            return kind
    return 0


def external_file(base, loc):
    """The real path of external data `loc` of a model in folder `base` (real path), or
    None when it points outside that folder."""
    full = os.path.realpath(os.path.join(base, loc))
    inside = not os.path.isabs(loc) and os.path.commonpath([full, base]) == base
    return full if inside else None


def load_external(proto, path):
    """Read every tensor's external data into it, refusing a location outside the
    model's folder (or missing). Returns {location: digest} of the files read, for the
    cache entry (loading.py): each file is mapped once (a file replaced meanwhile is
    not read, its old inode is) and its digest is the same before and after its
    tensors were read, so the values imported are those of that digest."""
    from lrmpi.cache import bytes_digest
    base = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    files = {}   # location -> (its read-only mapping, b"" if empty; its digest)
    try:
        for t in _tensors(proto.graph):
            if t.data_location != EXTERNAL:
                continue
            info = {e.key: e.value for e in t.external_data}
            loc = info.get("location", "")
            full = external_file(base, loc)
            if full is None:
                raise InputError(f"{path}: tensor {t.name!r} points to external data outside "
                                 f"the model's folder ({loc!r})")
            if not os.path.isfile(full):
                raise InputError(f"{path}: external data {loc!r} of tensor {t.name!r} is "
                                 "missing")
            if loc not in files:
                with open(full, "rb") as f:  # an empty file cannot be mapped
                    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) \
                        if os.fstat(f.fileno()).st_size else b""
                files[loc] = (m, bytes_digest(m))
            m = files[loc][0]
            offset, length = int(info.get("offset", 0)), info.get("length")
            end = len(m) if length is None else min(len(m), offset + int(length))
            data = bytes(m[offset:end]) if 0 <= offset < end else b""
            if length is not None and len(data) != int(length):
                raise InputError(f"{path}: external data {loc!r} of tensor {t.name!r} ends "
                                 "early")
            t.raw_data = data
            del t.external_data[:]
            t.data_location = 0
        out = {loc: bytes_digest(m) for loc, (m, _) in files.items()}
        for loc, (_, first) in files.items():
            if out[loc] != first:
                raise InputError(f"{path}: its external data {loc!r} changed while it was "
                                 "read; run again")
        return out
    finally:
        for m, _ in files.values():
            if isinstance(m, mmap.mmap):
                m.close()


def _tensors(graph):
    """Every TensorProto of a graph: initializers and node attributes, subgraphs too."""
    yield from graph.initializer
    for n in graph.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _tensors(a.g)
            for g in a.graphs:
                yield from _tensors(g)
