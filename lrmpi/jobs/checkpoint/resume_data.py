"""Resume data, written beside each resolution and read by --resume: a matmul's exact
level sums (tile by tile, never assembled), an inference job's engine state. Their names
are schema.py's; every dataset carries its checksum (checksum.py)."""
import os

import numpy as np

from lrmpi.jobs.checkpoint import checksum, owned
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.jobs.checkpoint.direct import DirectRows


def remove_all(folder, last, protect):
    """keep="latest", complete: the level sums, states and partial resolutions go,
    and so do the rank files of every resolution but the last (its C)."""
    keep = S.rank_name_re(last)
    for name in os.listdir(folder):
        if S.RESUME_FILE_RE.fullmatch(name) or (
                S.OWN_FILE_RE.fullmatch(name) and name.startswith("rank")
                and not keep.fullmatch(name)):
            owned.remove(folder, name, protect)


# --- matmul resume data: level sums, tile by tile ---

def write_tile_sums(f, index, ts, job_id):
    """Resolution `index`'s TileSums (numerics.accumulate) into an open file, with its
    checksum (hashed tile by tile: the sums are never assembled in memory); whole rows
    go around the page cache where they can (direct.DirectRows)."""
    f.attrs[S.RESOLUTION] = index
    f.attrs[S.LEVELS] = ts.levels
    f.attrs[S.JOB_ID] = job_id
    shape = (len(ts.levels), *ts.shape)
    direct = DirectRows(f, S.SUMS, shape, ts.dtype)
    try:
        for r0, c0, sums in ts.tiles:
            direct.put(r0, c0, sums)
    finally:
        direct.close()
    direct.dataset.attrs[S.CHECKSUM] = checksum.tiled_digest(shape, ts.dtype, ts.tiles)


def read_tile_sums(f, index, shape, read):
    """[(level, S)] from a sums file (its data through `read(dataset)`), or ValueError
    if it is not resolution `index`'s for a product of `shape`."""
    d = f[S.SUMS]
    levels = [int(x) for x in np.atleast_1d(f.attrs[S.LEVELS])]
    if int(f.attrs[S.RESOLUTION]) != index or not hasattr(d, "shape") \
            or d.shape != (len(levels), *shape) or d.dtype not in (np.int32, np.int64):
        raise ValueError("not this resolution's level sums")
    data = read(d)
    return [(lv, data[i]) for i, lv in enumerate(levels)]


# --- infer resume data: the engine state, a dict of arrays and lists of arrays ---

def write_state(f, index, state, job_id):
    """A state dict into an open file: arrays as datasets, lists of arrays as
    name/0, name/1, ...; bool arrays as uint8; scalars as attributes."""
    f.attrs[S.RESOLUTION] = index
    f.attrs[S.JOB_ID] = job_id
    for k, v in state.items():
        if isinstance(v, (list, tuple)):
            g = f.create_group(k)
            g.attrs["count"] = len(v)
            for i, a in enumerate(v):
                _dataset(g, str(i), a)
        elif isinstance(v, np.ndarray):
            _dataset(f, k, v)
        else:
            f.attrs["s_" + k] = v


def read_state(f, index, read):
    """The state dict of a state file (data through `read(dataset)`)."""
    if int(f.attrs[S.RESOLUTION]) != index:
        raise ValueError("holds another resolution")
    out = {}
    for k in f:
        obj = f[k]
        if hasattr(obj, "shape"):
            out[k] = _loaded(obj, read)
        else:
            out[k] = [_loaded(obj[str(i)], read) for i in range(int(obj.attrs["count"]))]
    for k, v in f.attrs.items():
        if k.startswith("s_"):
            out[k[2:]] = S.py(v)
    return out


def _dataset(group, name, a):
    a = np.asarray(a)
    d = checksum.put(group, name, a.astype(np.uint8) if a.dtype == bool else a)
    if a.dtype == bool:
        d.attrs["bool"] = 1


def _loaded(d, read):
    a = read(d)
    return a.astype(bool) if d.attrs.get("bool", 0) else a


def nbytes(state):
    """Bytes of the arrays in a state dict (for the free-space check)."""
    total = 0
    for v in state.values():
        if isinstance(v, (list, tuple)):
            total += sum(np.asarray(a).nbytes for a in v)
        elif isinstance(v, np.ndarray):
            total += v.nbytes
    return total
