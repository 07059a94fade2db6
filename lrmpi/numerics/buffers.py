"""Reusable large arrays: fresh memory is slow to first touch on these machines
(1-2.6 s per GB measured), so hot paths take buffers from pools instead of
allocating one per task or per resolution; large buffers are mappings of their own
(big_empty), faulted in ahead of use by one call per 32 MB (touch: 0.15-0.2 s per
GB instead of 1-2.6)."""
import ctypes
import mmap
import os
import queue
import threading

import numpy as np


PAGE = 4096
HUGE = 2 << 20   # a transparent huge page


def big_zeros(shape, dtype):
    """big_empty, filled with zeros (a fresh mapping is; a small buffer is cleared)."""
    a = big_empty(shape, dtype)
    if a.nbytes < HUGE:
        a.fill(0)
    return a


# Whether big_empty asks for transparent huge pages (huge_pages()). Where free memory
# is fragmented (a page cache full of checkpoints), the kernel compacts memory to
# fault a huge page in: measured [AMX VM, fresh process] 256 MB in 0.40-0.66 s with
# huge pages against 0.075 s with 4 KiB pages (0.03 s when huge pages were free).
# A matmul job turns them off on every rank (jobs/matmul.py): its workers fault
# buffers on demand, on the critical path (CRT residues and blocks), and its root's
# prefault has no spare core on two cores (n = 8192: 6-7 s of system CPU with huge
# pages, 2 s without). Inference keeps them (its buffers live as long as the model).
_HUGE_PAGES = [True]


def huge_pages(on):
    """Whether this process's big_empty buffers ask for transparent huge pages (on by
    default; a matmul worker turns them off, see _HUGE_PAGES). Returns the setting
    before."""
    before, _HUGE_PAGES[0] = _HUGE_PAGES[0], bool(on)
    return before


def big_empty(shape, dtype, at=0):
    """A large buffer (zero-filled: fresh anonymous memory) in a private mapping of its
    own, advised for transparent huge pages (as numpy advises its own large arrays)
    unless huge_pages(False), so that touch() can fault it in with one call: [shared
    AMX machine, thread CPU, 512 MB] 0.08-0.09 s by MADV_POPULATE_WRITE, 0.44-0.55 s
    by writing each page.
    Its byte `at` lies on a huge-page boundary (so on a page: rows can be written
    around the page cache, jobs.checkpoint.direct). Small buffers: aligned_empty."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < HUGE:
        return aligned_empty(shape, dtype, at=at)
    m = mmap.mmap(-1, nbytes + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # not shmem
    if _HUGE_PAGES[0]:
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
        except (AttributeError, OSError):  # not Linux, or THP unavailable: 4 KiB pages
            pass
    raw = np.frombuffer(m, np.uint8)
    start = -(raw.ctypes.data + at) % HUGE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


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
    memory. The range is widened to HUGE boundaries: the kernel maps a file's large
    folios (up to 2 MB) whole on one fault, so a read of one 32 kB row maps up to 2 MB
    around it (measured: 64 rows of a 128 MB operand mapped 121 MB); a read-only
    shared mapping loses nothing by it but a minor fault where a page is read again."""
    mm, mapped = X, False
    while mm is not None and not isinstance(mm, mmap.mmap):  # views of a np.memmap
        # read-only only: a copy-on-write mapping ("c") would lose what was written
        mapped |= isinstance(mm, np.memmap) and mm.mode == "r"
        mm = getattr(mm, "base", None)
    if mm is None or not mapped or X.ndim != 2 or mm.closed:  # never anonymous memory
        return
    r1 = X.shape[0] if r1 is None else r1
    base = np.frombuffer(mm, np.uint8).ctypes.data
    start = X.ctypes.data - base + r0 * X.strides[0]
    stop = X.ctypes.data - base + r1 * X.strides[0]
    start, stop = max(0, start // HUGE * HUGE), min(len(mm), -(-stop // HUGE) * HUGE)
    if stop > start:
        mm.madvise(mmap.MADV_DONTNEED, start, stop - start)


def release(a):
    """Give the memory of a big_empty buffer, or of a C-contiguous part of one (the
    whole pages inside it), back to the system while the array stays valid (reads then
    see zeros): for memory no one reads again (B's planes once every worker has them,
    a plane of A after the last resolution that multiplies it). No-op for other
    arrays."""
    m = _mapping(a)
    if m is None or m.closed or not a.flags.c_contiguous or not a.nbytes:
        return
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    lo, page = a.ctypes.data - base, mmap.PAGESIZE  # the kernel's (16 or 64 KiB elsewhere)
    lo, hi = -(-lo // page) * page, (lo + a.nbytes) // page * page
    if hi > lo:
        m.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def row_blocks(X, rows_per_block=256):
    """(r0, r1) blocks of X's rows, for passes that drop each block's pages after it."""
    return [(r0, min(r0 + rows_per_block, X.shape[0]))
            for r0 in range(0, X.shape[0], rows_per_block)] or [(0, 0)]


def touch(a):
    """Fault in every page of `a`: madvise(MADV_POPULATE_WRITE) on the part of a
    big_empty buffer's mapping that `a` spans (one call; Linux 5.14+; the mapping's
    2 MB of alignment slack is not asked for, though a huge page at the array's end
    may reach into it), else one write per page (numpy drops the GIL)."""
    m = _mapping(a)
    if m is not None:
        lo, hi, page = 0, len(m), mmap.PAGESIZE
        if a.flags.c_contiguous:   # its own pages only
            off = a.ctypes.data - np.frombuffer(m, np.uint8).ctypes.data
            lo, hi = off // page * page, min(hi, -(-(off + a.nbytes) // page) * page)
        try:  # in 32 MB steps: the call holds the GIL
            for start in range(lo, hi, 32 << 20):
                m.madvise(getattr(mmap, "MADV_POPULATE_WRITE", 23), start,
                          min(32 << 20, hi - start))
            return
        except OSError:
            pass
    flat = a.reshape(-1).view(np.uint8)
    flat[::4096] = flat[::4096]


def _mapping(a):
    """The anonymous mmap.mmap under a big_empty array (None for others, and for a
    file's np.memmap): np.frombuffer's base is a memoryview of it, whose obj is the
    mapping (touch wrote every page when it looked for `.base` only)."""
    m = a
    while m is not None and not isinstance(m, mmap.mmap):
        if isinstance(m, np.memmap):
            return None
        m = m.obj if isinstance(m, memoryview) else getattr(m, "base", None)
    return m


def file_region(a):
    """(path, offset, nbytes) of a C-contiguous array that is (a view of) a file mapped
    read-only (np.memmap, mode "r"): where its bytes lie in that file. None for every
    other array, and for a copy-on-write mapping, whose pages this process may have
    changed (the file would not hold what the array holds)."""
    if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
        return None
    m = a
    while isinstance(m, np.ndarray):
        if isinstance(m, np.memmap) and isinstance(m.base, mmap.mmap):
            if m.mode != "r" or not m.filename:
                return None
            return m.filename, int(m.offset) + (a.ctypes.data - m.ctypes.data), a.nbytes
        m = m.base
    return None


def mapped_file(address):
    """(device, inode) of the file mapped at `address` in this process, from
    /proc/self/maps (the file a mapping holds, whatever its name says now), or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if lo <= address < hi:
                    major, minor = (int(x, 16) for x in parts[3].split(":"))
                    return os.makedev(major, minor), int(parts[4])
    except (OSError, ValueError, IndexError):
        return None
    return None


def prefault(pools=(), arrays=(), later=()):
    """Fill pools, then touch arrays, on a background thread while the caller
    does other work: moves the page-fault cost of large buffers off the
    critical path (pools first: they are usually needed first). Then, at the
    lowest priority (Linux: nice 19, this thread only), touch the arrays in `later`:
    needed soon but not now, they take a core only when it would be idle."""

    def run():
        for pool, count in pools:
            pool.prefill(count)
        for a in arrays:
            touch(a)
        if later:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except (OSError, AttributeError):
                pass
            for a in later:
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
        return big_empty(self.shape, self.dtype) if a is None else a

    def put(self, a):
        self._free.put(a)

    def prefill(self, count):
        """Allocate and touch up to `count` of the lazily allocated buffers."""
        taken = [self._free.get() for _ in range(count)]
        for i, a in enumerate(taken):
            if a is None:
                taken[i] = big_empty(self.shape, self.dtype)
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
            return big_empty(shape, dtype, at=at or 0)
        return a

    def put(self, a):
        with self._lock:
            self._free.setdefault((a.shape, a.dtype), []).append(a)
