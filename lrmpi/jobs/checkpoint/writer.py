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
result's last; any resolution, when the earlier result is of other inputs or its
folder does not hold it intact), and only then is OUT.h5 replaced (one atomic
rename) and the earlier job's files deleted (only those owned.py allows, and none of
an earlier result that was not intact). A job that fails or stops before that
leaves OUT.h5 as it was and removes its own files.
"""
import errno
import math
import os
import queue
import threading
import time
import uuid

import h5py
import numpy as np

from lrmpi import config
from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import checksum, owned, rank_files, resume_data
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.jobs.checkpoint.atomic import AtomicH5, atomic_h5
from lrmpi.jobs.checkpoint.earlier import Earlier
from lrmpi.jobs.checkpoint.streamed import StreamedWrites
from lrmpi.numerics.accumulate import Streamed


def new_job_id():
    return uuid.uuid4().hex[:16]


class CheckpointWriter(StreamedWrites):
    """Writes one job's checkpoint at `path`; only the root rank creates one.

    `attrs` values may be callables (e.g. the input fingerprint): they are
    evaluated once, on the writer thread, off the critical path. `resume`: the
    Checkpoint this job continues (same job id and folder). `replace`: the
    Checkpoint of an earlier result, kept until this job has one at least as good.
    `clock()`: the job's elapsed seconds (for durable_s). `keep`: "all" resolution
    files, or only the "latest" (plus what a resume needs, until the job is complete).
    `protect`: os.stat of the job's input files, never deleted (owned.protected).
    """

    def __init__(self, path, kind, attrs, *, fsync=True, resume=None, replace=None,
                 clock=None, keep="all", protect=()):
        if kind not in S.KINDS:
            raise ValueError(f"kind must be one of {S.KINDS}")
        if keep not in S.KEEP:
            raise ValueError(f"keep must be one of {S.KEEP}")
        self.path, self.kind, self.fsync, self.keep = os.path.abspath(path), kind, fsync, keep
        self.clock = clock or time.perf_counter
        self.job_id = resume.job_id if resume is not None else new_job_id()
        self.attrs = {**attrs, S.KEEP_ATTR: keep}
        self.fingerprint = None  # as given, once the attributes are resolved
        self.completed = list(range(1, resume.completed + 1)) if resume is not None else []
        self.durable = list(resume.durable) if resume is not None else []
        self.durable += [math.nan] * (len(self.completed) - len(self.durable))
        # per-resolution figures the job file keeps for every resolution (the files
        # of earlier ones may be gone with keep="latest"): elapsed_s, cmax, bound_abs
        # (the CRT resolution's relative bound reads the layers')
        self.history = {k: list(resume.history.get(k, [])) if resume is not None else []
                        for k in S.HISTORY}
        for v in self.history.values():  # a job file from before a figure was kept: NaN,
            v += [math.nan] * (len(self.completed) - len(v))  # never a later one's value
        self.status, self.message = "running", ""
        self.protect = list(protect)
        # the first resolution whose files carry checksums (a job resumed from files
        # written before them: the next one)
        self.checksums_from = 1 if resume is None else (
            resume.checksums_from if resume.checked else resume.completed + 1)
        # an earlier result to keep until this job has one at least as good
        self.earlier = Earlier(replace, self.path) \
            if replace is not None and replace.completed > 0 else None
        self.published = self.earlier is None
        self.streams = {}  # resolution -> AtomicH5 of its file, while tiles stream in
        self.sums_streams = {}  # resolution -> SumsStream of its level sums
        self.folder = owned.make_job_folder(self.path, self.job_id)
        self._error = None
        # once a job failed, no later data job (a tile, level sums, a resolution) runs,
        # only its release(): the error is reported once and the job fails, but the root
        # still hands over what was queued, and a resolution written after a skipped one
        # (or one whose tiles were lost) would be linked damaged or out of order
        self._failed = False
        # whole resolutions waiting for the disk, at most (more blocks the caller);
        # streamed tiles are views of buffers the caller holds anyway
        self._slots = threading.BoundedSemaphore(config.get().write_queue)
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="lrmpi-checkpoint", daemon=True)
        self._thread.start()
        self._submit(self._resolve_attrs)
        if self.published:
            self._submit(self._write_job)

    # --- the writer thread ---
    def _loop(self):
        # a computed resolution is worth what reaches the disk: the writer (little
        # CPU, mostly waiting for the disk) runs ahead of the kernels
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), config.get().writer_nice)
        except (OSError, AttributeError):  # not Linux, or not allowed to raise priority
            pass
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if not (self._failed and getattr(job, "data", False)):
                    job()  # status and phase marks run even after a failure
                elif getattr(job, "release", None):
                    job.release()  # skipped after a failure: still hand its buffers back
            except BaseException as exc:  # reported to the caller at the next call (the
                if self._error is None:   # first one: a later mark's is a consequence)
                    self._error = exc
                self._failed = True
            finally:
                self._queue.task_done()

    def _submit(self, job):
        self._raise()
        self._put(job)

    def _put(self, job):
        self._alive()
        self._queue.put(job)

    def _alive(self):
        if not self._thread.is_alive():  # closed: nobody would run a job (nor end a flush)
            raise CheckpointError(f"cannot write the checkpoint at {self.path}: its writer "
                                  "was closed")

    def _submit_data(self, job, release=None):
        """A job that writes data: skipped after a failure (`release()` runs instead,
        also when the submission itself reports an earlier failure)."""
        job.data, job.release = True, release
        try:
            self._submit(job)
        except BaseException:
            if release is not None:
                release()
            raise

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
            for stream in [*self.streams.values(), *self.sums_streams.values()]:
                stream.abort()  # resolutions begun, never finished
            if not self.published:
                owned.remove_job(self.path, self.job_id, self.protect)
        return self.published

    def _resolve_attrs(self):
        # the fingerprint as given (job.Fingerprint): an earlier result's may be older
        self.fingerprint = self.attrs.get(S.FINGERPRINT)
        self.attrs = {k: S.attr(v() if callable(v) else v) for k, v in self.attrs.items()}

    # --- writes (on the writer thread) ---
    def _write_job(self):
        if not self.published:  # what this job wrote so far becomes visible now
            now = self.clock()
            self.durable = [now if d != d else d for d in self.durable]
        status, message, completed = self.status, self.message, list(self.completed)
        durable = list(self.durable)
        history = {k: list(v) for k, v in self.history.items()}
        listed = completed[-1:] if self.keep == "latest" else completed

        def fill(f):
            f.attrs[S.VERSION_ATTR] = S.FORMAT_VERSION
            f.attrs[S.KIND] = self.kind
            f.attrs[S.STATUS] = status
            f.attrs[S.COMPLETED] = completed[-1] if completed else 0
            f.attrs[S.MESSAGE] = message
            f.attrs[S.JOB_ID] = self.job_id
            f.attrs[S.CHECKSUMS_FROM] = self.checksums_from
            for k, v in self.attrs.items():
                f.attrs[k] = v
            g = f.create_group(S.RESOLUTIONS)
            g.attrs[S.DURABLE] = np.asarray(durable, np.float64)
            for k, v in history.items():
                g.attrs[k] = np.asarray(v, np.float64)
            for index in listed:
                g[S.res_name(index)] = h5py.ExternalLink(
                    S.link_target(self.path, self.job_id, index), "/")
        atomic_h5(self.path, fill, self.fsync)
        if not self.published:
            self.published = True
            self._remove_earlier()
        if self.keep == "latest":  # the job file no longer lists them
            for index in completed[:-1]:
                owned.remove(self.folder, f"res{S.res_name(index)}.h5", self.protect)
            if status == "complete":  # nothing left to resume: the resume data goes too
                resume_data.remove_all(self.folder, completed[-1] if completed else 0,
                                        self.protect)

    def _remove_earlier(self):
        """This job's result is in OUT.h5 now: the earlier job's files can go."""
        if self.earlier is not None:
            self.earlier.remove(self.job_id, self.protect)
            self.earlier = None

    def _write_resolution(self, index, datasets, attrs, state, sums, done, release,
                          virtual=None, whole=None):
        try:
            self._write_resolution_files(index, datasets, attrs, state, sums, virtual, whole)
        finally:
            if release is not None:
                release()
        if done is not None:  # durable: linked in the job file, or (an earlier result is
            # kept until this one is as good) on disk beside it
            done(self.durable[-1] if self.durable[-1] == self.durable[-1] else self.stamped)

    def _write_resolution_files(self, index, datasets, attrs, state, sums, virtual=None,
                                whole=None):
        if isinstance(sums, Streamed):  # before the resolution: a linked one can resume
            stream = self.sums_streams.pop(index, None)
            if stream is None:
                raise CheckpointError(f"{self.path}: resolution {index}'s level sums were "
                                      "never streamed")
            stream.finish()
        elif sums is not None:
            atomic_h5(S.sums_file(self.path, self.job_id, index),
                      lambda f: resume_data.write_tile_sums(f, index, sums, self.job_id),
                      self.fsync, sums.nbytes, aligned=True)
        if state is not None:
            state = state() if callable(state) else state
            atomic_h5(S.state_file(self.path, self.job_id, index),
                      lambda f: resume_data.write_state(f, index, state, self.job_id), self.fsync,
                      resume_data.nbytes(state))
        stream = self.streams.pop(index, None)
        if stream is None:
            stream = AtomicH5(S.res_file(self.path, self.job_id, index), self.fsync,
                              sum(np.asarray(v).nbytes for v in datasets.values()))
        try:
            f = stream.f
            f.attrs[S.JOB_ID] = self.job_id
            for k, v in attrs.items():
                f.attrs[k] = v
            if virtual is not None:
                rank_files.virtual_c(f, *virtual)
            for k, v in datasets.items():
                if k not in f:
                    checksum.put(f, k, v)
                    continue
                for i, row in v:  # streamed already: v holds (row, values) to write again
                    f[k][i] = row
            if S.RESULT in f and not f[S.RESULT].is_virtual and S.CHECKSUM not in f[S.RESULT].attrs:
                # streamed tile by tile: the whole C is in the caller's memory until
                # release() (read back only if it is not)
                checksum.stamp(f[S.RESULT], whole if whole is not None else f[S.RESULT][()])
        except BaseException:
            stream.abort()
            raise

        def stamp():
            self.stamped = self.clock()
            return {S.DURABLE: self.stamped}
        stream.commit(stamp=stamp)
        self.completed.append(index)
        self.durable.append(math.nan)
        for k in S.HISTORY:
            self.history[k].append(float(attrs.get(k, math.nan)))
        if self.published or self._good_enough(attrs):
            self.durable[-1] = self.clock()  # the job file links it now
            self._write_job()
        current = f"state{S.res_name(index)}.h5"
        for name in os.listdir(self.folder):
            if S.STATE_FILE_RE.fullmatch(name) and name != current:
                owned.remove(self.folder, name, self.protect)
        # a partial resolution's tiles are in the resolution now
        owned.remove(self.folder, f"partial{S.res_name(index)}.h5", self.protect)

    def _good_enough(self, attrs):
        return self.earlier.beaten_by(self.kind, self.attrs, attrs, self.fingerprint)

    def kept_same_inputs(self):
        """After close(): the earlier result this job kept is of the same inputs (a
        stop then still leaves a result of them in the output)."""
        return self.earlier is not None and self.earlier.ok and \
            self.earlier.same_inputs(self.kind, self.attrs, self.fingerprint)

    # --- the API the job calls ---
    def add_resolution(self, index, datasets, attrs, state=None, sums=None, done=None,
                       release=None, virtual=None, whole=None):
        """Queue resolution `index` (datasets + attrs; C may have been streamed already)
        and its resume data for the disk.

        `state`: the whole resume state, a dict or a callable returning one
        (evaluated on the writer thread), replacing the previous one. `sums`: a
        TileSums increment instead, into a file of its own that is kept (matmul).
        `done(durable_s)` runs once the resolution is on disk; `release()` runs in any
        case once the arrays are no longer needed (buffer pools). `virtual`: (shape,
        parts) when the ranks wrote C (rank_files.py): C becomes a virtual dataset over
        their committed files, parts = [(file name, [(tile, r0, r1, c0, c1)])].
        `whole`: C streamed tile by tile (write_tile), whole, for its checksum (held
        until release() like the tiles).
        """
        while not self._slots.acquire(timeout=0.5):  # the disk is behind: wait, unless
            try:                                      # the writer failed meanwhile
                self._raise()
                self._alive()
            except BaseException:
                if release is not None:  # the buffers go back (a pool's next get())
                    release()
                raise

        def job():
            try:
                self._write_resolution(index, datasets, attrs, state, sums, done, release,
                                       virtual, whole)
            finally:
                self._slots.release()

        def skipped():
            try:
                if release is not None:
                    release()
            finally:
                self._slots.release()
        self._submit_data(job, skipped)

    def rank_rows(self, parts, shape):
        """C of `shape` from the committed rank files `parts` (as add_resolution's),
        each of this job and checked, read band by band as a pass over its rows asks,
        or whole (RankRows)."""
        return rank_files.RankRows(self.path, self.job_id, parts, shape)

    def set_phase(self, phase, attrs=None):
        """Record what the job does now (schema PHASE), and `attrs` (e.g. how long the
        preparation took), in the job file once what was queued before is written
        (not waited for)."""
        if phase not in S.PHASES:
            raise ValueError(f"phase must be one of {S.PHASES}")
        attrs = {k: S.attr(v) for k, v in (attrs or {}).items()}

        def mark():
            self.attrs[S.PHASE] = phase
            self.attrs.update(attrs)
            if self.published:
                self._write_job()
        self._put(mark)  # queued even with an error pending (reported at the next call)

    def set_status(self, status, message=""):
        """Mark the job file (after everything queued before) and wait for the disk.
        While an earlier result is kept, only `complete` replaces it."""
        if status not in S.STATUSES:
            raise ValueError(f"status must be one of {S.STATUSES}")

        def mark():
            if self._failed and status == "complete":
                return  # a write failed: not complete (the caller then marks it failed)
            self.status, self.message = status, message
            if self.published or status == "complete":
                self._write_job()
        self._put(mark)  # queued before an error pending is raised: the file says failed
        self.flush()
