"""The HDF5 checkpoint: schema (version 1), crash-safe writes, reading, resume.

Layout of a job written to OUT.h5 (SPEC §3)::

    OUT.h5                      small job file, replaced atomically per resolution
      attrs: format_version, kind, status, completed, planned, bits, planes, order,
             lrmpi_version, and the job's other parameters (shape, fingerprint, ...)
      /resolutions/001  ->  external link to OUT.h5.d/res001.h5:/
      /resolutions/002  ->  ...
    OUT.h5.d/res001.h5          one file per completed resolution, never rewritten
      attrs: elapsed_s, pairs, bound_abs, bound_rel;   datasets: C (matmul)
    OUT.h5.d/sums001.h5         matmul: the exact level sums resolution 1 added (resume)
    OUT.h5.d/state002.h5        infer: exact engine state of the latest resolution (resume)

Every file is written under a temporary name, closed, fsynced and renamed into
place (os.replace), so a SIGKILL at any instant leaves the previous job file
and every resolution it links intact; readers never see a half-written file,
and each checkpoint costs O(one resolution) bytes, not O(all so far). A matmul
resumes by adding the level sums of every completed resolution again (exact
integers, int32 where they fit): 64 MB a resolution at n = 4096 instead of
its 192 MB accumulator, and nothing to export on the root. The
writes happen on a background thread (h5py releases the GIL while writing), in
order, so the root keeps gathering while a resolution goes to disk; `flush`
waits for them. Files are
written with the default libver: a file left open by a killed writer with
libver="latest" may never open again (notes/PLATFORM.md).
"""
import errno
import glob
import os
import queue
import threading

import h5py
import numpy as np

from lrmpi.errors import CheckpointError

FORMAT_VERSION = 1
KINDS = ("matmul", "infer")
STATUSES = ("running", "complete", "deadline", "failed")
RESOLUTIONS = "resolutions"
SIDECAR_SUFFIX = ".d"
STATE_LIMBS = "limbs"


# what h5py raises on damaged files: OSError mostly, but also RuntimeError (e.g.
# "Link iteration failed"), KeyError, ValueError and TypeError (found by fuzzing)
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def res_name(index):
    return f"{index:03d}"


def sidecar(path):
    return path + SIDECAR_SUFFIX


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


HEADROOM = 64 << 10  # bytes beyond the data an HDF5 file may need (metadata: a few KB)


def _check_space(path, nbytes):
    """ENOSPC now, before HDF5 sees a full disk: a write that fails inside HDF5's
    close leaves the library with a half-closed file, and the process later
    crashes in HDF5's cleanup (SIGSEGV at exit, seen on a full tmpfs)."""
    st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    if st.f_bavail * st.f_frsize < nbytes + HEADROOM:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def atomic_h5(path, fill, fsync=True, nbytes=0):
    """Write an HDF5 file through `fill(h5file)` so that `path` is old or new, never
    torn; `nbytes`: the data it will hold (checked against the free space first)."""
    _check_space(path, nbytes)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        if fsync:
            _fsync_path(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync_path(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sums_path(path, index):
    return os.path.join(sidecar(os.path.abspath(path)), f"sums{res_name(index)}.h5")


def _attr(value):
    return -1 if value is None else value



WRITER_NICE = 10  # niceness of the writer thread (Linux: per thread)

class CheckpointWriter:
    """Writes one job's checkpoint; only the root rank creates one.

    `attrs` values may be callables (e.g. the input fingerprint): they are
    evaluated once, on the writer thread, off the critical path.
    """

    QUEUE = 2  # resolutions waiting for the disk at most; more blocks the caller

    def __init__(self, path, kind, attrs, *, fsync=True, resume=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self.path, self.kind, self.fsync = os.path.abspath(path), kind, fsync
        self.dir = sidecar(self.path)
        self.attrs = attrs
        self.completed = []  # indices of resolutions on disk
        self.status, self.message = "running", ""
        self._check_writable()
        if resume is not None:
            self.completed = list(resume.resolution_indices())
        else:
            self._clear_previous()
        self._error = None
        self._queue = queue.Queue(self.QUEUE)
        self._thread = threading.Thread(target=self._loop, name="lrmpi-checkpoint", daemon=True)
        self._thread.start()
        self._submit(self._resolve_attrs)
        self._submit(self._write_job)

    # --- the writer thread ---
    def _loop(self):
        # the writer's CPU work (input hash, copies, compression-free writes) must
        # not take cores from the kernels: run this thread at a lower priority
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
        except (OSError, AttributeError):  # pragma: no cover - not Linux
            pass
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
                elif getattr(job, "release", None):
                    job.release()  # skipped after a failure: still hand its buffers back
            except BaseException as exc:  # reported to the caller at the next call
                self._error = exc
            finally:
                self._queue.task_done()

    def _submit(self, job):
        self._raise()
        self._queue.put(job)

    def _raise(self):
        if self._error is not None:
            exc, self._error = self._error, None
            if isinstance(exc, OSError):
                why = os.strerror(exc.errno) if exc.errno else " ".join(str(exc).split())
                if "No space left on device" in str(exc):
                    why = os.strerror(errno.ENOSPC)
                raise CheckpointError(f"cannot write the checkpoint at {self.path}: {why}") \
                    from exc
            raise exc

    def check(self):
        """Raise at once what failed on the writer thread, if anything did."""
        self._raise()

    def flush(self):
        """Wait until everything submitted is on disk; raise what failed."""
        self._queue.join()
        self._raise()

    def close(self):
        self.flush()
        self._queue.put(None)
        self._thread.join()

    def _resolve_attrs(self):
        self.attrs = {k: _attr(v() if callable(v) else v) for k, v in self.attrs.items()}

    # --- setup ---
    def _check_writable(self):
        if os.path.isdir(self.path):
            raise CheckpointError(f"output {self.path} is a directory")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise CheckpointError(f"output directory {parent} does not exist")
        try:
            os.makedirs(self.dir, exist_ok=True)
            probe = os.path.join(self.dir, f".probe.{os.getpid()}")
            with open(probe, "wb"):
                pass
            os.unlink(probe)
        except OSError as exc:
            raise CheckpointError(f"cannot write the checkpoint at {self.path}: "
                                  f"{exc.strerror or exc}") from None
        # temporary files of a killed earlier run
        for stale in glob.glob(self.path + ".tmp.*") + glob.glob(os.path.join(self.dir, "*.tmp.*")):
            os.unlink(stale)

    def _clear_previous(self):
        for old in glob.glob(os.path.join(self.dir, "*.h5")):
            os.unlink(old)

    # --- writes (on the writer thread) ---
    def _write_job(self):
        status, message, completed = self.status, self.message, list(self.completed)

        def fill(f):
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["kind"] = self.kind
            f.attrs["status"] = status
            f.attrs["completed"] = completed[-1] if completed else 0
            f.attrs["message"] = message
            for k, v in self.attrs.items():
                f.attrs[k] = v
            g = f.create_group(RESOLUTIONS)
            rel = os.path.basename(self.dir)
            for index in completed:
                g[res_name(index)] = h5py.ExternalLink(f"{rel}/res{res_name(index)}.h5", "/")
        atomic_h5(self.path, fill, self.fsync)

    def _write_resolution(self, index, datasets, attrs, state, sums, done, release):
        try:
            self._write_resolution_files(index, datasets, attrs, state, sums)
        finally:
            if release is not None:
                release()
        if done is not None:
            done()

    def _write_resolution_files(self, index, datasets, attrs, state, sums):
        def fill_res(f):
            for k, v in attrs.items():
                f.attrs[k] = v
            for k, v in datasets.items():
                f.create_dataset(k, data=v)
        if sums is not None:  # before the resolution: a linked one can always resume
            write_sums, nbytes = sums

            def fill_sums(f):
                f.attrs["resolution"] = index
                write_sums(f)
            atomic_h5(self._sums_path(index), fill_sums, self.fsync, nbytes)
        atomic_h5(os.path.join(self.dir, f"res{res_name(index)}.h5"), fill_res, self.fsync,
                  sum(np.asarray(v).nbytes for v in datasets.values()))
        if state is not None:
            state = state() if callable(state) else state

            def fill_state(f):
                f.attrs["resolution"] = index
                for k, v in state.items():
                    f.create_dataset(k, data=v)
            atomic_h5(self._state_path(index), fill_state, self.fsync,
                      sum(np.asarray(v).nbytes for v in state.values()
                          if isinstance(v, np.ndarray)))
        self.completed.append(index)
        self._write_job()
        for old in glob.glob(os.path.join(self.dir, "state*.h5")):
            if old != self._state_path(index):
                os.unlink(old)

    # --- the API the driver calls ---
    def add_resolution(self, index, datasets, attrs, state=None, sums=None, done=None,
                       release=None):
        """Queue resolution `index` (datasets + attrs) and its resume data for the disk.

        `state`: the whole resume state, a dict or a callable returning one
        (evaluated on the writer thread), replacing the previous one. `sums`: an
        increment instead, (write(h5file), bytes it holds), into a file of its own
        that is kept (matmul: the resolution's level sums; see `Checkpoint.sums`).
        `done()` runs once the job file links the resolution; `release()` runs in
        any case once the arrays are no longer needed (buffer pools).
        """
        def job():
            self._write_resolution(index, datasets, attrs, state, sums, done, release)
        job.release = release
        try:
            self._submit(job)
        except BaseException:
            if release is not None:
                release()
            raise

    def _state_path(self, index):
        return os.path.join(self.dir, f"state{res_name(index)}.h5")

    def _sums_path(self, index):
        return sums_path(self.path, index)

    def set_status(self, status, message=""):
        """Mark the job file (after everything queued before) and wait for the disk."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")

        def mark():
            self.status, self.message = status, message
            self._write_job()
        self._submit(mark)
        self.flush()


_PROBE = """
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    dict(f.attrs)
    g = f.get("resolutions")
    if isinstance(g, h5py.Group):
        for name in g:
            dict(g[name].attrs)
"""


PROBE_TIMEOUT = 60  # s: damaged files can also send the HDF5 library into a loop


def probe(path, what="checkpoint"):
    """Open a file we did not write in a child process first: fuzzing found damaged
    HDF5 files on which the HDF5 library itself segfaults; that must end as a clean
    error here, not as a dead process (or a dead MPI job)."""
    import signal
    import subprocess
    import sys
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True,
                           timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CheckpointError(f"{path}: reading the {what} hangs the HDF5 library") from None
    if p.returncode < 0:
        raise CheckpointError(f"{path}: the {what} is damaged (the HDF5 library crashed "
                              f"reading it: {signal.Signals(-p.returncode).name})")


class Checkpoint:
    """Read access to a checkpoint (for inspect, resume and users' scripts)."""

    def __init__(self, path, safe=False):
        """`safe`: probe the file in a child process first (see probe)."""
        self.path = os.path.abspath(path)
        if not os.path.exists(self.path):
            raise CheckpointError(f"no checkpoint at {path}")
        if safe:
            probe(self.path)
        try:
            with h5py.File(self.path, "r") as f:
                self.attrs = {k: _py(v) for k, v in f.attrs.items()}
                self.names = sorted(f[RESOLUTIONS].keys()) if RESOLUTIONS in f else []
        except H5_ERRORS as exc:
            raise CheckpointError(f"{path} is not a readable lrmpi checkpoint ({exc})") from None
        version = self.attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format_version {version!r} is not "
                                  f"supported (this lrmpi reads {FORMAT_VERSION})")
        # a tampered file must not reach the resume logic with nonsense values
        a = self.attrs
        if a.get("kind") not in KINDS or a.get("status") not in STATUSES or \
                not isinstance(a.get("completed"), int) or \
                any(not (n.isdigit() and len(n) == 3) for n in self.names) or \
                [int(n) for n in self.names] != list(range(1, len(self.names) + 1)) or \
                a["completed"] != len(self.names):
            raise CheckpointError(f"{path} is not a consistent lrmpi checkpoint (kind, status, "
                                  "completed or the resolution list are damaged)")

    def resolution_indices(self):
        return [int(n) for n in self.names]

    def resolution(self, index, datasets=True):
        """(attrs, {name: array}) of one resolution."""
        try:
            with h5py.File(self.path, "r") as f:
                g = f[f"{RESOLUTIONS}/{res_name(index)}"]
                attrs = {k: _py(v) for k, v in g.attrs.items()}
                data = {k: g[k][()] for k in g} if datasets else {}
        except H5_ERRORS as exc:
            raise CheckpointError(f"{self.path}: resolution {index} is unreadable ({exc})") from None
        return attrs, data

    def sums(self, index, shape, safe=False):
        """[(level, S)] of resolution `index`: the exact level sums it added to a
        matmul's accumulator, each S of `shape` (int32 or int64). `safe`: probe
        the file in a child process first (see probe)."""
        path = sums_path(self.path, index)
        if safe and os.path.exists(path):
            probe(path, "resume data")
        try:
            with h5py.File(path, "r") as f:
                d = f["sums"]
                levels = [int(x) for x in np.atleast_1d(f.attrs["levels"])]
                if int(f.attrs["resolution"]) != index or not isinstance(d, h5py.Dataset) \
                        or d.shape != (len(levels), *shape) \
                        or d.dtype not in (np.int32, np.int64):
                    raise CheckpointError(f"{path} does not hold the level sums of resolution "
                                          f"{index} for a {shape[0]}x{shape[1]} product")
                out = [(lv, d[i]) for i, lv in enumerate(levels)]
        except H5_ERRORS as exc:
            raise CheckpointError(f"{self.path}: resume data of resolution {index} is "
                                  f"missing or unreadable ({exc})") from None
        # the exact adder's contract (kernels.h): |S| < 2^62; a damaged file must not
        # reach it with more
        if any(S.size and (int(S.max()) >= 2**62 or int(S.min()) <= -2**62) for _, S in out):
            raise CheckpointError(f"{path}: level sums of resolution {index} out of range")
        return out

    def state(self, index):
        path = os.path.join(sidecar(self.path), f"state{res_name(index)}.h5")
        try:
            with h5py.File(path, "r") as f:
                if int(f.attrs["resolution"]) != index:
                    raise CheckpointError(f"{path} holds another resolution")
                return {k: f[k][()] for k in f}
        except H5_ERRORS as exc:
            raise CheckpointError(f"{self.path}: resume state of resolution {index} is "
                                  f"missing or unreadable ({exc})") from None


def _py(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v
