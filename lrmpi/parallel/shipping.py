"""Objects to the other ranks, with arrays mapped from files sent as the file's name.

A model read from the cache folder (nn/loading.py) holds its weights as views of one
file mapped read-only; a rank on rank 0's host that finds the same file (device,
inode, size, modification time: os.replace makes a new inode, so a rewritten entry
never matches; and the inode its own mapping holds, /proc/self/maps, is the one rank
0's holds) maps it itself, and nothing of those arrays travels. A ResNet-50's
200 MB of float64 weights took 0.41 s of its start that way, copied into fresh
memory on every rank. Every other array travels out of band (mpi4py's pkl5, as
comm.bcast_object). A rank that cannot map a file (on another host, or the file
changed) gets those arrays in a second broadcast among the ranks that need them.

The pickle stream names mapped arrays by index (persistent ids); the files and the
arrays' places in them travel beside it, so unpickling opens nothing by itself.
"""
import io
import os
import pickle

import numpy as np

from lrmpi.numerics.buffers import file_region, mapped_file
from lrmpi.parallel.comm import bcast_object, hostname, split_off

MIN_BYTES = 1 << 16  # smaller arrays travel in the message: a mapping costs more


def bcast(comm, rank, obj):
    """`obj` from rank 0 to every rank of `comm` (a collective; obj is ignored on the
    others): equal values everywhere, arrays mapped where the file allows."""
    if rank == 0:
        sent = _Pickler.dumps(obj)
        head = bcast_object(comm, sent.head)
        got = obj
    else:
        head = bcast_object(comm, None)
        try:  # never out of the collectives below on an error: rank 0 would wait
            got = _loads(head, _mapped(head))
        except Exception:  # noqa: BLE001 -- a mapping that failed: sent by value
            got = _MISSING
    need = rank != 0 and got is _MISSING
    if comm.allreduce(int(need)):
        sub = split_off(comm, rank == 0 or need)
        if sub is not None:
            try:
                arrays = bcast_object(sub, sent.arrays if rank == 0 else None)
            finally:
                sub.Free()
            if need:
                got = _loads(head, arrays)
    return got


_MISSING = object()


class _Pickler(pickle.Pickler):
    def __init__(self, f, buffers):
        super().__init__(f, protocol=5, buffer_callback=buffers.append)
        self.files, self.places, self.arrays = {}, [], []

    @classmethod
    def dumps(cls, obj):
        f, buffers = io.BytesIO(), []
        p = cls(f, buffers)
        p.dump(obj)
        p.head = {"stream": f.getvalue(), "buffers": buffers, "host": hostname(),
                  "files": p.files, "places": p.places}
        return p

    def persistent_id(self, obj):
        if not isinstance(obj, np.ndarray) or obj.nbytes < MIN_BYTES:
            return None
        region = file_region(obj)
        if region is None:
            return None
        path, at, _ = region
        if path not in self.files:
            ident, mapped = identity(path), mapped_file(obj.ctypes.data)
            # the file rank 0 mapped must still be the one under its name (replaced
            # since: a new inode there, and the array travels by value)
            if ident is None or mapped is None or mapped[1] != ident[1]:
                self.files[path] = None
            else:
                self.files[path] = (ident, mapped)
        if self.files[path] is None:
            return None
        self.places.append((path, at, obj.dtype.str, obj.shape))
        self.arrays.append(obj)
        return len(self.arrays) - 1


def _mapped(head):
    """The arrays of `head` mapped from their files here, or None (another host, a file
    that is not the one rank 0 read)."""
    if not head["places"]:
        return []
    if head["host"] != hostname():
        return None
    maps = {}
    try:
        for path, known in head["files"].items():
            if known is None:
                continue
            ident, mapped = known
            if identity(path) != ident:
                return None
            maps[path] = np.memmap(path, np.uint8, mode="r")
            if mapped_file(maps[path].ctypes.data) != mapped:  # replaced meanwhile
                return None
        out = []
        for path, at, dtype, shape in head["places"]:
            dt = np.dtype(dtype)
            size = dt.itemsize * int(np.prod(shape))
            out.append(maps[path][at:at + size].view(dt).reshape(shape))
        return out
    except (OSError, ValueError):
        return None


def _loads(head, arrays):
    if arrays is None:
        return _MISSING
    return _Unpickler(io.BytesIO(head["stream"]), head["buffers"], arrays).load()


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, buffers, arrays):
        super().__init__(f, buffers=buffers)
        self.arrays = arrays

    def persistent_load(self, pid):
        return self.arrays[pid]


def identity(path):
    """(device, inode, size, modification time) of a file, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
