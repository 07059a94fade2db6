"""Rows of a dataset written around the page cache (O_DIRECT).

On the virtual machines these jobs run on, a fresh page-cache page costs the CPU a
fresh page of memory does, 1-3 s per GB: a 128 MB resolution (n = 4096) written
through the cache took 0.34 s of the root's CPU with its fsync, through O_DIRECT
0.008 s (the disk's DMA does the copy). The root writes a resolution per few
hundred milliseconds beside two busy workers on two cores, so that CPU was theirs.

h5py writes the file as always (metadata, attributes, every other dataset); the
dataset meant for direct writes is contiguous, allocated when it is created, never
filled, at an offset aligned to ALIGN (the file is opened with that alignment).
A block of whole rows covers a range of the file; the whole pages inside it go by
pwrite on an O_DIRECT descriptor of the same file, from the rows' memory when it
lies on the same page offset (the C buffers are aligned: numerics.buffers), else
through a reused aligned bounce buffer (a copy at memory speed; a fresh page-cache
page costs far more); the partial pages at its two ends, which it shares with the
rows before and after it, go through the page cache by a plain pwrite, as every
write of those neighbours' bytes to those pages does, so no page is ever written
both ways. Row widths that are not a multiple of a page (10000 x 6000 float64: 48000
bytes a row) took the page cache whole before: at 720 MB a resolution, the writer
thread was the job's limit. A file system without O_DIRECT (tmpfs) returns False for
every block, and the caller writes them all through h5py; one that refuses a direct
write (EINVAL) gets all the later ones through the cache descriptor. A block that is
not whole rows (a tile of a wide C) returns False too; a dataset's blocks are all
whole rows or none are (tiles split columns for all rows or for none). Never both for
one dataset: an h5py write of a small piece reads a 64 KiB window of the file into
HDF5's sieve buffer and writes all of it back at the flush, over what went around it
meanwhile. An fsync of the file covers all of it; HDF5 never reads or writes the
dataset's bytes itself.
"""
import errno
import os
import threading

import h5py
import numpy as np

from lrmpi.numerics.buffers import PAGE, aligned_empty

ALIGN = PAGE    # O_DIRECT needs the device's logical block (512 here); pages are safe
THRESHOLD = 1 << 16  # datasets from this size on start at an ALIGN boundary
BOUNCE = 8 << 20     # bytes of the bounce buffer (one per writing thread, reused)
_local = threading.local()


def file_options():
    """h5py.File keyword arguments that align large datasets for direct writes."""
    return {"alignment_threshold": THRESHOLD, "alignment_interval": ALIGN}


class DirectRows:
    """A dataset `name` of `shape` (..., n) created in the open h5py file `f` for rows written around the page cache (write_rows: rows numbered over
    the leading dimensions together, as in a C-ordered (-1, n) view)."""

    def __init__(self, f, name, shape, dtype=np.float64):
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.CONTIGUOUS)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        space = h5py.h5s.create_simple(tuple(shape))
        dset = h5py.h5d.create(f.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype)),
                               space, dcpl=dcpl)
        self.dataset = h5py.Dataset(dset)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.itemsize, self.rows = self.dtype.itemsize, int(np.prod(self.shape[:-1]))
        self.offset = dset.get_offset()
        self.fd = self.cached = None
        if self.offset is not None and self.offset % ALIGN == 0 and hasattr(os, "O_DIRECT"):
            try:
                self.fd = os.open(f.filename, os.O_WRONLY | os.O_DIRECT)
                self.cached = os.open(f.filename, os.O_WRONLY)
            except OSError:  # e.g. tmpfs: no O_DIRECT
                self.close()

    def write_rows(self, r0, rows):
        """Rows r0.. of the dataset from `rows` (whole rows, in the dataset's dtype or
        converted to it): True if they were written (their whole pages around the page
        cache), False if the caller must write them (h5py: no O_DIRECT here, or not
        whole rows)."""
        rows = np.asarray(rows)
        if self.cached is None or rows.ndim != 2 or rows.shape[1] != self.shape[-1]:
            return False
        if not 0 <= r0 <= self.rows - len(rows):
            raise ValueError(f"rows {r0}..{r0 + len(rows)} of a dataset of {self.rows}")
        rows = np.ascontiguousarray(rows, self.dtype)
        where = self.offset + r0 * self.shape[-1] * self.itemsize
        data = memoryview(rows.reshape(-1).view(np.uint8))
        a0 = -(-where // ALIGN) * ALIGN                   # the whole pages: [a0, a1)
        a1 = max(a0, (where + len(data)) // ALIGN * ALIGN)
        head, tail = a0 - where, where + len(data) - a1
        if a1 == a0:  # within a page or two: all of it through the cache
            _pwrite(self.cached, data, where)
            return True
        if head:
            _pwrite(self.cached, data[:head], where)
        if tail:
            _pwrite(self.cached, data[len(data) - tail:], a1)
        body = data[head:len(data) - tail]
        try:
            self._direct(body, a0, (rows.ctypes.data + head) % ALIGN == 0)
        except OSError as exc:  # a file system that opens O_DIRECT but refuses this write
            if exc.errno != errno.EINVAL or self.fd is None:
                raise
            os.close(self.fd)
            self.fd = None
            self._direct(body, a0, True)  # through the cache from now on
        return True

    def put(self, r0, c0, parts):
        """A tile at (r0, c0): parts[l] its (h, w) block of leading index l (one block
        for a 2-D dataset). Whole rows go by write_rows, other blocks (a wide C's
        tiles) by h5py. True if every block went around h5py."""
        lead = len(self.shape) > 2
        direct = True
        levels, (m, n) = (self.shape[0] if lead else 1), self.shape[-2:]
        if len(parts) > levels:
            raise ValueError(f"{len(parts)} blocks for a dataset of {levels} level(s)")
        for h, w in map(np.shape, parts):  # all checked before any is written
            # a block past its own level's rows, or a whole row given at c0 != 0, would
            # land in other entries through write_rows (h5py refuses both)
            if not (0 <= r0 <= m - h and 0 <= c0 <= n - w):
                raise ValueError(f"a {h} x {w} block at ({r0}, {c0}) of a dataset "
                                 f"{self.shape}")
        for i, block in enumerate(parts):
            if self.write_rows(i * self.shape[-2] + r0, block):
                continue
            direct = False
            self.dataset[(i,) * lead + (slice(r0, r0 + block.shape[0]),
                                        slice(c0, c0 + block.shape[1]))] = block
        return direct

    def _direct(self, body, at, aligned):
        if self.fd is None:
            _pwrite(self.cached, body, at)
        elif aligned:
            _pwrite(self.fd, body, at)
        else:
            bounce = _bounce()
            for i in range(0, len(body), BOUNCE):
                piece = body[i:i + BOUNCE]
                bounce[:len(piece)] = np.frombuffer(piece, np.uint8)
                _pwrite(self.fd, bounce[:len(piece)].data, at + i)

    def close(self):
        for name in ("fd", "cached"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def _pwrite(fd, view, at):
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], at + done)


def _bounce():
    """This thread's aligned bounce buffer (BOUNCE bytes; faulted in once)."""
    b = getattr(_local, "bounce", None)
    if b is None:
        b = _local.bounce = aligned_empty((BOUNCE,), np.uint8)
    return b
