"""Crash-safe HDF5 files: written under a temporary name, fsynced, renamed into place.

A SIGKILL at any instant leaves the old file or the new one, never a torn one, and a
reader never sees a half-written file. Files are written with the default libver: a
file left open by a killed writer with libver="latest" may never open again. Every
file is sealed with its checksums before it is closed (checksum.py).
"""
import errno
import os

import h5py

from lrmpi.jobs.checkpoint import checksum
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.jobs.checkpoint.direct import file_options

HEADROOM = 64 << 10  # bytes beyond the data an HDF5 file may need (metadata: a few KB)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_space(path, nbytes):
    """ENOSPC now, before HDF5 sees a full disk: a write that fails inside HDF5's
    close leaves the library with a half-closed file, and the process later
    crashes in HDF5's cleanup (SIGSEGV at exit, seen on a full tmpfs)."""
    st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    if st.f_bavail * st.f_frsize < nbytes + HEADROOM:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


class AtomicH5:
    """An HDF5 file written under a temporary name and renamed into place on commit():
    `path` is old or new, never torn. `nbytes`: the data it will hold (checked
    against the free space first). `.f` is the open h5py file; `aligned`: large
    datasets start at a page boundary, for rows written around the page cache
    (direct.py; `.direct`, a DirectRows of the file, is closed with it)."""

    def __init__(self, path, fsync=True, nbytes=0, aligned=False):
        check_space(path, nbytes)
        self.path, self.fsync = path, fsync
        self.tmp = f"{path}{S.TMP_SUFFIX}{os.getpid()}"
        if os.path.isfile(self.tmp) and not os.path.islink(self.tmp):
            os.unlink(self.tmp)  # ours: left by a killed process that had this pid
        # "x": never opened through a link someone left under our temporary name
        self.f = h5py.File(self.tmp, "x", **(file_options() if aligned else {}))
        self.direct = None

    def sync_data(self):
        """Push what was written so far to the disk (while more is computed)."""
        self.f.flush()
        if self.fsync:
            fsync_path(self.tmp)

    def commit(self, stamp=None):
        """Seal (checksums), close, fsync, rename into place. `stamp()`: attributes
        set once the data is on disk (e.g. when it became durable), before the rename."""
        try:
            if stamp is not None:
                self.sync_data()  # the data: the bulk of the time
                for k, v in stamp().items():
                    self.f.attrs[k] = v
            checksum.seal(self.f)
            self._close_direct()
            self.f.close()
            if self.fsync:
                fsync_path(self.tmp)
            os.replace(self.tmp, self.path)
            if self.fsync:
                fsync_path(os.path.dirname(os.path.abspath(self.path)))
        except BaseException:
            self.abort()
            raise

    def _close_direct(self):
        if self.direct is not None:
            self.direct.close()
            self.direct = None

    def abort(self):
        try:
            self._close_direct()
            self.f.close()
        finally:
            if os.path.isfile(self.tmp) and not os.path.islink(self.tmp):
                os.unlink(self.tmp)


def atomic_h5(path, fill, fsync=True, nbytes=0, stamp=None, aligned=False):
    """Write an HDF5 file through `fill(h5file)` so that `path` is old or new, never
    torn (see AtomicH5)."""
    a = AtomicH5(path, fsync, nbytes, aligned)
    try:
        fill(a.f)
    except BaseException:
        a.abort()
        raise
    a.commit(stamp)


def hdf5_info():
    """h5py's and HDF5's versions, and whether this HDF5 is parallel (`lrmpi info`)."""
    return (f"{h5py.version.version} (HDF5 {h5py.version.hdf5_version}, "
            f"parallel={h5py.get_config().mpi})")
