"""Reusable large arrays: fresh memory is slow to first touch on these machines
(1-2.6 s per GB measured), so hot paths take buffers from pools instead of
allocating one per task or per resolution."""
import queue
import threading

import numpy as np


PAGE = 4096


def aligned_empty(shape, dtype, align=PAGE):
    """An uninitialised array whose data starts at an `align` boundary (numpy's own
    large buffers start 16 bytes past a page): rows of it can be written to a file
    around the page cache (jobs.checkpoint.direct)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def touch(a):
    """Fault in every page of `a` (one write per page; numpy drops the GIL)."""
    flat = a.reshape(-1).view(np.uint8)
    flat[::4096] = flat[::4096]


def prefault(pools=(), arrays=()):
    """Fill pools, then touch arrays, on a background thread while the caller
    does other work: moves the page-fault cost of large buffers off the
    critical path (pools first: they are usually needed first)."""
    import threading

    def run():
        for pool, count in pools:
            pool.prefill(count)
        for a in arrays:
            touch(a)
    t = threading.Thread(target=run, name="lrmpi-prefault", daemon=True)
    t.start()
    return t


class BufferPool:
    """At most `count` arrays of one shape and dtype; get() blocks while all are out.

    The bound is also back-pressure: a producer cannot run further ahead of the
    consumer (e.g. the checkpoint writer) than `count` buffers.
    """

    def __init__(self, shape, dtype, count):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._free = queue.Queue()
        for _ in range(count):
            self._free.put(None)  # allocated on first use

    def get(self):
        a = self._free.get()
        return aligned_empty(self.shape, self.dtype) if a is None else a

    def put(self, a):
        self._free.put(a)

    def prefill(self, count):
        """Allocate and touch up to `count` of the lazily allocated buffers."""
        taken = [self._free.get() for _ in range(count)]
        for i, a in enumerate(taken):
            if a is None:
                taken[i] = aligned_empty(self.shape, self.dtype)
                touch(taken[i])
        for a in taken:
            self._free.put(a)


class ScratchPool:
    """Unbounded free lists keyed by (shape, dtype), for per-task buffers.

    Thread-safe: the checkpoint writer hands buffers back from its thread."""

    def __init__(self):
        self._free = {}
        self._lock = threading.Lock()

    def get(self, shape, dtype):
        with self._lock:
            lst = self._free.get((tuple(shape), np.dtype(dtype)))
            a = lst.pop() if lst else None
        return np.empty(shape, dtype) if a is None else a

    def put(self, a):
        with self._lock:
            self._free.setdefault((a.shape, a.dtype), []).append(a)
