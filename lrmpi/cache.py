"""Per-model work kept across runs: one folder (config cache_dir), one file per entry.

What a model costs to prepare once (its imported graph, operator norms, packed
weights) is stored under a key that names everything the stored values depend
on: the model's bytes (or the arrays derived from them), lrmpi's version and, for
anything kernel-specific, the kernel ISA. A key never matches different inputs,
and every entry holds its own kind and key and the digest of all its arrays, checked
when it is read: an entry is either right or absent; a damaged or edited entry, or
another's renamed onto this name (it was used: another model's weights, bounds below
the error), reads as absent.

Entries are arrays only (numpy .npz, read with allow_pickle=False): a cache file
is never unpickled. Writes are atomic (a temporary name in the same folder, then
os.replace), so a reader sees a whole entry or none, and concurrent writers of
the same entry (several ranks or jobs) are harmless: the last rename wins and
both wrote the same values. The cache is never required: a read-only or missing
folder, or cache_dir = "", means every entry is computed again.
"""
import os
import threading

import numpy as np

from lrmpi import config
from lrmpi._version import __version__
from lrmpi.digests import PREFIX, Digest
from lrmpi.errors import InputError


def digest(*parts):
    """A hex key over `parts` (bytes, str, numbers, numpy arrays, tuples of them)
    and lrmpi's version: the same parts give the same key, any change another."""
    h = Digest(__version__.encode())  # XXH3: a ResNet-50's keys took 0.3 s of SHA-256
    for p in parts:
        _feed(h, p)
    return _hex(h)


def _feed(h, p):
    if isinstance(p, np.ndarray):
        h.update(f"{p.dtype.str}{p.shape}".encode())
        h.update(np.ascontiguousarray(p))  # its buffer: no copy
    elif isinstance(p, (bytes, bytearray, memoryview)):
        h.update(b"b%d:" % len(p))
        h.update(p)
    elif isinstance(p, (tuple, list)):
        h.update(b"(%d" % len(p))
        for q in p:
            _feed(h, q)
        h.update(b")")
    else:
        h.update(repr(p).encode())
    h.update(b";")


def file_digest(path, chunk=1 << 20):
    """The XXH3-128 digest of a file's bytes (32 hex digits). Read into one reused
    buffer: a new bytes object per chunk is fresh memory to first touch (a 100 MB
    ResNet-50 took 0.043-0.073 s, 0.034-0.042 s this way)."""
    h = Digest()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return _hex(h)
            h.update(view[:n])


def bytes_digest(data):
    """file_digest's value for a file holding `data` (bytes, or a mapping's buffer)."""
    h = Digest()
    h.update(data)
    return _hex(h)


def _hex(h):
    return h.hexdigest().removeprefix(PREFIX)


KEY = "__entry__"  # in every .npz entry: its own kind and key, checked on load
SUM = "__digest__"  # ... and the digest of all its arrays (names, dtypes, shapes, bytes)


def _entry_digest(arrays):
    h = Digest()
    for name in sorted(arrays):
        _feed(h, name)
        _feed(h, np.asarray(arrays[name]))
    return _hex(h)


class Entry:
    """One cache entry: `kind` (a short name: "graph", "norms", ...) and a key from
    digest(); load() -> {name: array} or None, store({name: array})."""

    suffix = ".npz"

    def __init__(self, kind, key):
        folder = config.get().cache_dir
        self.kind, self.key = kind, key
        self.path = os.path.join(os.path.expanduser(folder), f"{kind}-{key}{self.suffix}") \
            if folder else None

    def load(self):
        """The entry's arrays, or None: absent, damaged, or an entry stored under
        another key (a file renamed onto this name: another model's weights or norms
        would be used as this one's)."""
        if self.path is None or not os.path.isfile(self.path):  # a pipe would block
            return None
        try:  # our own handle: numpy leaks its own when a damaged zip fails to open
            with open(self.path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                out = {k: f[k] for k in f.files}
        except Exception:  # noqa: BLE001 -- zip/npy errors of any kind
            return None  # absent, damaged or foreign: computed again
        # a damaged or edited entry (its values changed, its key intact: an edited
        # norms entry gave bounds below the error) reads as absent
        if str(out.pop(SUM, "")) != _entry_digest(out):
            return None
        if str(out.pop(KEY, "")) != f"{self.kind}-{self.key}":
            return None
        return out

    def store(self, arrays):
        tagged = {**arrays, KEY: np.array(f"{self.kind}-{self.key}")}
        tagged[SUM] = np.array(_entry_digest(tagged))
        return self._write(lambda f: np.savez(f, **tagged))

    def _tmp(self):
        """The entry's temporary name before it is complete, or None when its name is
        not ours to replace (a pipe, a folder: computed each time). The host: a folder
        nodes share; the thread: two writers of one process."""
        if self.path is None or (os.path.lexists(self.path) and not os.path.isfile(self.path)):
            return None
        _remove_stale(self.path)
        return f"{self.path}.tmp.{_HOST}.{os.getpid()}-{threading.get_ident()}"

    def _write(self, save):
        tmp = self._tmp()
        if tmp is None:
            return False
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(tmp, "wb") as f:
                save(f)
            os.replace(tmp, self.path)
            return True
        except OSError:  # a cache only: a read-only or full disk changes nothing
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False


_HOST = __import__("socket").gethostname().replace(".", "_") or "host"


def _remove_stale(path):
    """ENTRY.tmp.HOST.PID-THREAD files of this host's processes that no longer exist (killed
    while writing); another host's are never touched (their pids mean nothing here)."""
    import glob
    for tmp in glob.glob(glob.escape(f"{path}.tmp.{_HOST}.") + "*"):
        pid = tmp.rsplit(".", 1)[1].split("-")[0]
        if not (pid.isascii() and pid.isdigit()) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        except (OSError, OverflowError):  # alive (another user's), or no pid at all
            pass


class MappedEntry(Entry):
    """An entry of one large array (.npy), read by mapping the file (copy-on-write):
    its pages come from the page cache as they are read, none is copied or zeroed.
    Its integrity is the caller's to check (a companion Entry holding its digest):
    an .npy has no checksum of its own."""

    suffix = ".npy"

    def load(self, mode="c"):
        """The array, mapped: copy-on-write ("c") or read-only ("r": views of it can be
        sent to the ranks of this host as the file's name, parallel/shipping.py)."""
        if self.path is None or not os.path.isfile(self.path):
            return None
        try:
            return np.load(self.path, mmap_mode=mode, allow_pickle=False)
        except Exception:  # noqa: BLE001 -- a damaged or foreign file: computed again
            return None

    def store_runs(self, runs, align, dtype=np.int8):
        """Store the 1-D arrays `runs` (of `dtype`) one after the other, each from a
        multiple of `align` bytes (zeros between), without forming their concatenation
        (a copy of 100 MB in fresh memory); (offsets in items, digest of the stored
        array) or None."""
        dtype = np.dtype(dtype)
        step = align // dtype.itemsize
        offsets, total = [], 0
        for w in runs:
            offsets.append(total)
            total += -(-len(w) // step) * step
        h = Digest()

        def save(f):
            np.lib.format.write_array_header_1_0(  # padded to 64 bytes: data aligned
                f, {"descr": dtype.str, "fortran_order": False, "shape": (total,)})
            for w in runs:
                w = np.ascontiguousarray(w, dtype)
                for part in (memoryview(w).cast("B"), bytes(-w.nbytes % align)):
                    f.write(part)
                    h.update(part)
        return (offsets, _hex(h)) if self._write(save) else None


    def arena(self, min_bytes=0):
        """An Arena making this entry as its arrays (of `min_bytes` and more) are
        computed, or None (no cache folder, or one that takes no file)."""
        tmp = self._tmp()
        if tmp is None:
            return None
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            return Arena(self.path, tmp, min_bytes)
        except OSError:
            return None


class Arena:
    """A MappedEntry of float64 arrays made where they are computed: take(shape) hands
    out arrays mapped from the entry's temporary file (each from a page boundary, past
    a header of one page), so a model's weights are written once, into the page cache,
    as they are computed, instead of into fresh memory first and copied into the file
    later (the first touch of 200 MB took 0.4-0.6 s on these VMs). finish() gives the
    file its .npy header and the entry's name; discard() removes it. The arrays stay
    valid after either (a mapping keeps its file). Space is reserved as arrays are
    taken (posix_fallocate): a full disk makes take() return None, never a SIGBUS
    when a page is first written."""

    HEAD = 4096

    def __init__(self, path, tmp, min_bytes=0):
        import mmap
        self.path, self.tmp, self.page = path, tmp, mmap.PAGESIZE
        self.min_bytes = min_bytes
        self.head = -(-self.HEAD // self.page) * self.page
        self.fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self.size = self.head
        self.places = {}   # data address -> (offset in items, bytes)
        try:
            os.ftruncate(self.fd, self.size)
        except OSError:
            self.discard()
            raise

    def take(self, shape):
        """A new float64 array of `shape` in the file (contents undefined), or None
        (smaller than min_bytes, or no room)."""
        import mmap
        count = int(np.prod(shape))
        if self.fd is None or count == 0 or count * 8 < self.min_bytes:
            return None
        nbytes = count * 8
        grow = -(-nbytes // self.page) * self.page
        try:
            os.posix_fallocate(self.fd, self.size, grow)
            m = mmap.mmap(self.fd, grow, offset=self.size)
        except (OSError, ValueError):  # a full disk, a file system that maps no file
            return None
        a = np.frombuffer(m, np.float64, count).reshape(shape)
        self.places[a.ctypes.data] = ((self.size - self.head) // 8, nbytes)
        self.size += grow
        return a

    def place(self, a):
        """The offset (in items) of `a` if it is one of take()'s arrays whole (or a
        C-contiguous view of all of one), else None."""
        if not isinstance(a, np.ndarray) or a.dtype != np.float64 or \
                not a.flags.c_contiguous:
            return None
        at = self.places.get(a.ctypes.data)
        return at[0] if at is not None and at[1] == a.nbytes else None

    def finish(self):
        """The entry, complete under its name: the digest of its array (array_digest),
        or None when it could not be written."""
        if self.fd is None:
            return None
        total = (self.size - self.head) // 8
        head = ("{'descr': '<f8', 'fortran_order': False, 'shape': (%d,), }" % total)
        head = head.ljust(self.head - 10 - 1) + "\n"  # one page: the data page-aligned
        try:
            os.pwrite(self.fd, b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little")
                      + head.encode("latin1"), 0)
            data = np.memmap(self.tmp, np.float64, "r", offset=self.head, shape=(total,))
            digest = array_digest(data)
            del data
            os.replace(self.tmp, self.path)
        except OSError:
            self.discard()
            return None
        os.close(self.fd)
        self.fd = None
        return digest

    def discard(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


_writing = []  # later()'s threads: joined at exit, so no entry is left half-written


def later(fn, *args, name="lrmpi-cache"):
    """fn(*args) on a thread of its own, for a write the caller need not wait for (it
    computes meanwhile); the thread, to join where its result is wanted. At exit a
    write under way finishes (10 s at most), else its temporary file is left for the
    next store to remove. Entries are named by the caller (Entry reads the config on
    the caller's thread: the cache folder in force is the caller's)."""
    import atexit
    if not _writing:
        atexit.register(_finish)
    t = threading.Thread(target=fn, args=args, name=name, daemon=True)
    _writing.append(t)
    t.start()
    return t


def _finish(timeout=10.0):
    for t in _writing:
        t.join(timeout)


def mapped_watch(data, digest):
    """(fd, ctime, data, digest) of a cache file a job maps (data: its np.memmap), for
    mapped_unchanged; None if its name no longer opens."""
    try:
        fd = os.open(data.filename, os.O_RDONLY)
    except OSError:
        return None
    return fd, os.fstat(fd).st_ctime_ns, data, digest


def mapped_unchanged(watch, what):
    """The watch of a mapped cache file, its ctime brought up to date; InputError naming
    `what` if the file was changed in place since (its digest differs: lrmpi only ever
    replaces an entry whole, and a mapping sees a write into the file). A fstat, and a
    digest only when the ctime moved."""
    fd, ctime, data, digest = watch
    now = os.fstat(fd).st_ctime_ns
    if now == ctime:
        return watch
    if array_digest(data) != digest:
        raise InputError(f"model: {what} in the cache folder ({data.filename}) changed in "
                         "place while the job ran (lrmpi only ever replaces an entry "
                         "whole): the values computed since cannot be trusted; run again")
    return fd, now, data, digest


def array_digest(a):
    """The XXH3-128 digest of an array's bytes (32 hex digits)."""
    h = Digest()
    h.update(np.ascontiguousarray(a))
    return _hex(h)
