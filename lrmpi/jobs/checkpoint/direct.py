"""Rows of a dataset written around the page cache (O_DIRECT).

On the virtual machines these jobs run on, a fresh page-cache page costs the CPU a
fresh page of memory does, 1-3 s per GB: a 128 MB resolution (n = 4096) written
through the cache took 0.34 s of the root's CPU with its fsync, through O_DIRECT
0.008 s (the disk's DMA does the copy). The root writes a resolution per few
hundred milliseconds beside two busy workers on two cores, so that CPU was theirs.

h5py writes the file as always (metadata, attributes, every other dataset); the
dataset meant for direct writes is contiguous, allocated when it is created, never
filled, at an offset aligned to ALIGN (the file is opened with that alignment).
Whole rows whose memory (the C buffers are aligned: numerics.buffers), file offset
and length are multiples of ALIGN go by
pwrite on an O_DIRECT descriptor of the same file; anything else (a file system
without O_DIRECT, such as tmpfs; a row width that breaks the alignment; a buffer
that is not aligned) returns False and the caller writes it through h5py. An fsync
of the file covers both; HDF5 never reads or writes the dataset's bytes itself.
"""
import os

import h5py
import numpy as np

from lrmpi.numerics.buffers import PAGE

ALIGN = PAGE    # O_DIRECT needs the device's logical block (512 here); pages are safe
THRESHOLD = 1 << 16  # datasets from this size on start at an ALIGN boundary


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
        self.shape, self.itemsize = tuple(shape), np.dtype(dtype).itemsize
        self.offset = dset.get_offset()
        self.fd = None
        if self.offset is not None and self.offset % ALIGN == 0 and hasattr(os, "O_DIRECT"):
            try:
                self.fd = os.open(f.filename, os.O_WRONLY | os.O_DIRECT)
            except OSError:  # e.g. tmpfs: no O_DIRECT
                self.fd = None

    def write_rows(self, r0, rows):
        """Rows r0.. of the dataset from `rows` (whole rows, C-contiguous): True if they
        went around the page cache, False if the caller must write them (h5py)."""
        row_bytes = self.shape[-1] * self.itemsize
        where = self.offset + r0 * row_bytes if self.offset is not None else 0
        if self.fd is None or rows.ndim != 2 or rows.shape[1] != self.shape[-1] or \
                not rows.flags.c_contiguous or rows.dtype.itemsize != self.itemsize or \
                where % ALIGN or rows.nbytes % ALIGN or rows.ctypes.data % ALIGN:
            return False
        view = memoryview(rows.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], where + done)
        return True

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
