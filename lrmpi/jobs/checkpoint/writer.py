"""Writing a job's checkpoint: crash-safe files, a background writer thread, and an
earlier result kept until this job has one at least as good.

Every file is written under a temporary name, fsynced and renamed into place
(os.replace), so a SIGKILL at any instant leaves the previous job file and every
resolution it links intact, and readers never see a half-written file. Each
checkpoint writes one resolution (not the whole history). Writes run on a
background thread in order (h5py releases the GIL while writing), so the root
keeps gathering while a resolution goes to disk. Files are written with the
default libver: a file left open by a killed writer with libver="latest" may never
open again.

Replacing an earlier result: this job's files go to a folder of their own
(OUT.h5.d/<job_id>/); OUT.h5 keeps listing the earlier job's resolutions until this
job has one at least as good (complete, or a bound_rel no larger than the earlier
result's last), and only then is OUT.h5 replaced (one atomic rename) and the
earlier folder deleted. A job that fails or stops before that leaves OUT.h5 as it
was and removes its own folder.
"""
import errno
import glob
import math
import os
import queue
import shutil
import threading
import time
import uuid

import h5py
import numpy as np

from lrmpi import config
from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import schema as S

HEADROOM = 64 << 10  # bytes beyond the data an HDF5 file may need (metadata: a few KB)


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_space(path, nbytes):
    """ENOSPC now, before HDF5 sees a full disk: a write that fails inside HDF5's
    close leaves the library with a half-closed file, and the process later
    crashes in HDF5's cleanup (SIGSEGV at exit, seen on a full tmpfs)."""
    st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    if st.f_bavail * st.f_frsize < nbytes + HEADROOM:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def atomic_h5(path, fill, fsync=True, nbytes=0, stamp=None):
    """Write an HDF5 file through `fill(h5file)` so that `path` is old or new, never
    torn; `nbytes`: the data it will hold (checked against the free space first).
    `stamp()`: attributes set once the data is on disk (e.g. when it became
    durable), before the rename."""
    _check_space(path, nbytes)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
            if stamp is not None:
                f.flush()
                if fsync:
                    _fsync_path(tmp)  # the data: the bulk of the time
                for k, v in stamp().items():
                    f.attrs[k] = v
        if fsync:
            _fsync_path(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync_path(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def new_job_id():
    return uuid.uuid4().hex[:16]


class CheckpointWriter:
    """Writes one job's checkpoint at `path`; only the root rank creates one.

    `attrs` values may be callables (e.g. the input fingerprint): they are
    evaluated once, on the writer thread, off the critical path. `resume`: the
    Checkpoint this job continues (same job id and folder). `replace`: the
    Checkpoint of an earlier result, kept until this job has one at least as good.
    `clock()`: the job's elapsed seconds (for durable_s).
    """

    def __init__(self, path, kind, attrs, *, fsync=True, resume=None, replace=None,
                 clock=None):
        if kind not in S.KINDS:
            raise ValueError(f"kind must be one of {S.KINDS}")
        self.path, self.kind, self.fsync = os.path.abspath(path), kind, fsync
        self.clock = clock or time.perf_counter
        self.job_id = resume.job_id if resume is not None else new_job_id()
        self.attrs = dict(attrs)
        self.completed = resume.resolution_indices() if resume is not None else []
        self.durable = list(resume.durable) if resume is not None else []
        self.durable += [math.nan] * (len(self.completed) - len(self.durable))
        self.status, self.message = "running", ""
        # an earlier result to keep until this job has one at least as good
        self.earlier = replace if replace is not None and replace.completed > 0 else None
        self.earlier_rel = _bound_rel(self.earlier.last()) if self.earlier else math.inf
        self.published = self.earlier is None
        try:
            os.makedirs(S.job_dir(self.path, self.job_id), exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot write the checkpoint at {self.path}: "
                                  f"{exc.strerror or exc}") from None
        self._error = None
        self._queue = queue.Queue(config.get().write_queue)
        self._thread = threading.Thread(target=self._loop, name="lrmpi-checkpoint", daemon=True)
        self._thread.start()
        self._submit(self._resolve_attrs)
        if self.published:
            self._submit(self._write_job)

    # --- the writer thread ---
    def _loop(self):
        # the writer's CPU work (input hash, copies) must not take cores from the
        # kernels: run this thread at a lower priority
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), config.get().writer_nice)
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
            if isinstance(exc, OSError) and not isinstance(exc, CheckpointError):
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
        """Flush, stop the thread; if this job never got as far as the earlier result
        it would replace, keep that one and remove this job's files. Returns True if
        `path` now holds this job's result."""
        try:
            self.flush()
        finally:
            self._queue.put(None)
            self._thread.join()
            if not self.published:
                shutil.rmtree(S.job_dir(self.path, self.job_id), ignore_errors=True)
        return self.published

    def _resolve_attrs(self):
        self.attrs = {k: S.attr(v() if callable(v) else v) for k, v in self.attrs.items()}

    # --- writes (on the writer thread) ---
    def _write_job(self):
        if not self.published:  # what this job wrote so far becomes visible now
            now = self.clock()
            self.durable = [now if d != d else d for d in self.durable]
        status, message, completed = self.status, self.message, list(self.completed)
        durable = list(self.durable)

        def fill(f):
            f.attrs["format_version"] = S.FORMAT_VERSION
            f.attrs["kind"] = self.kind
            f.attrs["status"] = status
            f.attrs["completed"] = completed[-1] if completed else 0
            f.attrs["message"] = message
            f.attrs[S.JOB_ID] = self.job_id
            for k, v in self.attrs.items():
                f.attrs[k] = v
            g = f.create_group(S.RESOLUTIONS)
            g.attrs[S.DURABLE] = np.asarray(durable, np.float64)
            for index in completed:
                g[S.res_name(index)] = h5py.ExternalLink(
                    S.link_target(self.path, self.job_id, index), "/")
        atomic_h5(self.path, fill, self.fsync)
        if not self.published:
            self.published = True
            self._remove_earlier()

    def _remove_earlier(self):
        """This job's result is in OUT.h5 now: the earlier job's files can go."""
        if self.earlier is None:
            return
        side = S.sidecar(self.path)
        if self.earlier.job_id and self.earlier.job_id != self.job_id:
            shutil.rmtree(S.job_dir(self.path, self.earlier.job_id), ignore_errors=True)
        elif not self.earlier.job_id:  # written before job ids: files beside the folder
            for old in glob.glob(os.path.join(side, "*.h5")):
                os.unlink(old)
        self.earlier = None

    def _write_resolution(self, index, datasets, attrs, state, sums, done, release):
        try:
            self._write_resolution_files(index, datasets, attrs, state, sums)
        finally:
            if release is not None:
                release()
        if done is not None:
            done()

    def _write_resolution_files(self, index, datasets, attrs, state, sums):
        if sums is not None:  # before the resolution: a linked one can always resume
            atomic_h5(S.sums_file(self.path, self.job_id, index),
                      lambda f: S.write_tile_sums(f, index, sums), self.fsync, sums.nbytes)
        if state is not None:
            state = state() if callable(state) else state
            atomic_h5(S.state_file(self.path, self.job_id, index),
                      lambda f: S.write_state(f, index, state), self.fsync, S.nbytes(state))

        def fill_res(f):
            f.attrs[S.JOB_ID] = self.job_id
            for k, v in attrs.items():
                f.attrs[k] = v
            for k, v in datasets.items():
                f.create_dataset(k, data=v)
        atomic_h5(S.res_file(self.path, self.job_id, index), fill_res, self.fsync,
                  sum(np.asarray(v).nbytes for v in datasets.values()),
                  stamp=lambda: {S.DURABLE: self.clock()})
        self.completed.append(index)
        self.durable.append(math.nan)
        if self.published or self._good_enough(attrs):
            self.durable[-1] = self.clock()  # the job file links it now
            self._write_job()
        for old in glob.glob(os.path.join(S.job_dir(self.path, self.job_id), "state*.h5")):
            if old != S.state_file(self.path, self.job_id, index):
                os.unlink(old)

    def _good_enough(self, attrs):
        return _bound_rel(attrs) <= self.earlier_rel

    # --- the API the job calls ---
    def add_resolution(self, index, datasets, attrs, state=None, sums=None, done=None,
                       release=None):
        """Queue resolution `index` (datasets + attrs) and its resume data for the disk.

        `state`: the whole resume state, a dict or a callable returning one
        (evaluated on the writer thread), replacing the previous one. `sums`: a
        TileSums increment instead, into a file of its own that is kept (matmul).
        `done()` runs once the resolution is on disk; `release()` runs in any case
        once the arrays are no longer needed (buffer pools).
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

    def set_status(self, status, message=""):
        """Mark the job file (after everything queued before) and wait for the disk.
        While an earlier result is kept, only `complete` replaces it."""
        if status not in S.STATUSES:
            raise ValueError(f"status must be one of {S.STATUSES}")

        def mark():
            self.status, self.message = status, message
            if self.published or status == "complete":
                self._write_job()
        self._submit(mark)
        self.flush()


def _bound_rel(attrs):
    v = attrs.get("bound_rel", math.inf) if attrs else math.inf
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if v != v else v
