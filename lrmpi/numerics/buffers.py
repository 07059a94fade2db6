"""Reusable large arrays: fresh memory is slow to first touch on these machines
(1-2.6 s per GB measured), so hot paths take buffers from pools instead of
allocating one per task or per resolution."""
import queue
import threading

import numpy as np


PAGE = 4096


def aligned_empty(shape, dtype, align=PAGE, at=0):
    """An uninitialised array whose byte `at` lies on an `align` boundary (numpy's own
    large buffers start 16 bytes past a page): rows of it can be written to a file
    around the page cache (jobs.checkpoint.direct). `at`: e.g. where a message's body
    starts after its header."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = -(raw.ctypes.data + at) % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def drop_pages(X, r0=0, r1=None):
    """Let the pages of rows [r0, r1) of a memory-mapped operand (np.load's
    mmap_mode) leave this process's memory: they stay in the page cache, and a later
    read maps them again (a minor fault). An operand read in passes (maxima,
    encoding, hashing) then never counts whole in the peak RSS. No-op for arrays in
    memory."""
    import mmap
    mm = X
    while mm is not None and not isinstance(mm, mmap.mmap):  # views of a np.memmap
        mm = getattr(mm, "base", None)
    if mm is None or X.ndim != 2 or mm.closed:
        return
    r1 = X.shape[0] if r1 is None else r1
    base = np.frombuffer(mm, np.uint8).ctypes.data
    start = X.ctypes.data - base + r0 * X.strides[0]
    stop = X.ctypes.data - base + r1 * X.strides[0]
    start, stop = -(-start // PAGE) * PAGE, stop // PAGE * PAGE
    if stop > start:
        mm.madvise(mmap.MADV_DONTNEED, start, stop - start)


def row_blocks(X, rows_per_block=256):
    """(r0, r1) blocks of X's rows, for passes that drop each block's pages after it."""
    return [(r0, min(r0 + rows_per_block, X.shape[0]))
            for r0 in range(0, X.shape[0], rows_per_block)] or [(0, 0)]


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

    def get(self, shape, dtype, at=None):
        """An array of `shape` and `dtype`, reused if one is free; `at`: its byte `at`
        on a page boundary (keep one `at` per shape and dtype)."""
        with self._lock:
            lst = self._free.get((tuple(shape), np.dtype(dtype)))
            a = lst.pop() if lst else None
        if a is None:
            return np.empty(shape, dtype) if at is None else aligned_empty(shape, dtype, at=at)
        return a

    def put(self, a):
        with self._lock:
            self._free.setdefault((a.shape, a.dtype), []).append(a)
