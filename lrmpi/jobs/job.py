"""The job skeleton every kind shares (matmul, infer): run_job.

On rank 0: guard the output (not an input, not a foreign file, one writer),
resolve the deadline, read the inputs, decide between a fresh run, a resume and
the replacement of an earlier result, open the checkpoint writer (the job file
exists from then on, status running, phase preparing), build what the kind
needs (long: a model's digit planes and norms; stops are honoured), then run the
kind's loop (phase computing), record the status, requeue under SLURM. On the
other ranks: serve the kind's loop. Signals (SIGTERM, SIGUSR1, SIGUSR2, SIGINT)
become a stop flag on the root and are ignored by the other ranks, which wait
for the root's STOP.

A kind implements jobs.kind.JobKind: `name`, `matched` (attributes a resumed run
must share with its checkpoint), `inputs` (the paths it reads), prepare() ->
checkpoint attributes (reading the inputs: quick), optionally build(should_stop)
(the long preparation, after the job file exists: it calls should_stop() at least
once a second, which raises Stopped when the job must stop), `planned`, `meta`,
elapsed(), release(), serve() and execute(control, writer, ckpt, start) ->
(status, reason).
"""
import os
import time
import weakref
from dataclasses import dataclass, field, fields

import numpy as np

from lrmpi import config
from lrmpi.digests import Digest, is_legacy
from lrmpi.errors import CheckpointError, ConfigError, InputError, Stopped
from lrmpi.jobs import slurm
from lrmpi.jobs.deadline import Deadline, StopSignals
from lrmpi.log import logger
from lrmpi.numerics.buffers import drop_pages, row_blocks
from lrmpi.parallel.comm import get_comm, rank_size


@dataclass
class Outcome:
    """What a run ended with (on the root)."""

    status: str                 # complete | deadline | failed
    completed: int              # last completed resolution (1-based), 0 if none
    planned: int
    reason: str = ""
    resolutions: list = field(default_factory=list)  # per-resolution metadata dicts
    kept_earlier: bool = False  # the output still holds an earlier, better result
    on_disk: bool = False       # the output holds a resolution of these inputs (exit 3, not 4)

    @property
    def interrupted(self):
        return self.reason == INTERRUPTED or self.reason.startswith(INTERRUPTED + " while ")


INTERRUPTED = "interrupted"


@dataclass
class JobOptions:
    """Options every kind of job takes (the CLI's job options)."""

    deadline: str = None        # --deadline: a duration or a time
    time_margin: float = None   # --margin: seconds kept free before the deadline
    resume: bool = False        # continue the checkpoint in `out`
    overwrite: bool = False     # replace an existing result (once this one is as good)
    fsync: bool = True
    requeue: bool = False       # inside SLURM: requeue the job when stopped by the deadline
    max_restarts: int = 3
    worker_timeout: float = None  # seconds a rank may be silent before the job fails
    keep: str = None            # resolution files kept: "all" (None: the default, or what
                                # a resumed checkpoint keeps), or the "latest" only

    @classmethod
    def split(cls, options):
        """(JobOptions, the remaining options) from keyword arguments."""
        names = {f.name for f in fields(cls)}
        return (cls(**{k: v for k, v in options.items() if k in names}),
                {k: v for k, v in options.items() if k not in names})


class Fingerprint:
    """The inputs' fingerprint, computed when called (on the writer thread), and in
    the form of checkpoints written before digests named their algorithm
    (`legacy()`), to compare with theirs."""

    def __init__(self, *parts):
        self.parts, self.values = parts, {}

    def __call__(self):
        return self._value(False)

    def legacy(self):
        return self._value(True)

    def _value(self, legacy):  # once each: the inputs may be gigabytes
        if legacy not in self.values:
            self.values[legacy] = fingerprint(*self.parts, legacy=legacy)
        return self.values[legacy]

    def matches(self, stored):
        """Whether a checkpoint's stored fingerprint is of these inputs."""
        return stored == (self.legacy() if is_legacy(stored) else self())


class InputWatch:
    """A running job's input files, watched for a change in place (the job reads its
    operands and samples mapped from them, again at later resolutions: the CRT
    resolution was computed from an A rewritten meanwhile, under A's old fingerprint).
    check() before a resolution is recorded: a file whose ctime moved makes the inputs'
    fingerprint be computed again from what the job reads now, and a different one fails
    the job in one line (a touch or chmod changes nothing)."""

    def __init__(self, specs, fp):
        from lrmpi.jobs.checkpoint.output import input_file
        self.fp, self.files = fp, []
        for f in dict.fromkeys(filter(None, map(input_file, specs))):
            try:
                fd = os.open(f, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            except OSError:
                continue
            self.files.append([f, fd, os.fstat(fd).st_ctime_ns])
            weakref.finalize(self, os.close, fd)

    def check(self):
        moved = []
        for entry in self.files:
            now = os.fstat(entry[1]).st_ctime_ns
            if now != entry[2]:
                moved.append(entry[0])
                entry[2] = now
        if moved and fingerprint(*self.fp.parts) != self.fp():
            raise InputError(f"input {', '.join(moved)} was changed in place while the job ran: "
                             "what it computed since cannot be trusted (nothing of it is "
                             "kept); run again")


def fingerprint(*parts, legacy=False):
    """A digest (lrmpi.digests) of arrays (shapes and values) and other parts (their
    repr): what a resumed job must match. Values are hashed as float64, except
    float32 arrays, hashed as they are (with a tag): their float64 copy doubled
    the bytes, and this hash is written before the first resolution can be."""
    h = Digest(legacy=legacy)
    for x in parts:
        if isinstance(x, np.ndarray):
            h.update(np.asarray(x.shape, np.int64).tobytes())
            f32 = x.dtype == np.float32
            if f32:
                h.update(b"float32")
            dtype = np.float32 if f32 else np.float64
            if x.ndim == 2:  # an operand, maybe mapped: its pages leave after hashing
                for r0, r1 in row_blocks(x):
                    h.update(memoryview(np.ascontiguousarray(x[r0:r1], dtype)).cast("B"))
                    drop_pages(x, r0, r1)
            else:  # samples: in 8 MB pieces, never a whole float64 copy
                flat = x.reshape(-1)
                for i in range(0, flat.size, 1 << 20):
                    h.update(memoryview(np.ascontiguousarray(flat[i:i + (1 << 20)], dtype))
                             .cast("B"))
        else:
            h.update(repr(x).encode())
    return h.hexdigest()


class Control:
    """What a job's loop asks of the job: when to stop, and recording its status
    and phase."""

    def __init__(self, signals=None, deadline=None, writer=None, stop_when=None):
        self.signals, self.deadline, self.writer = signals, deadline, writer
        self.stop_when = stop_when
        self.doing = "preparing"

    def should_stop(self, what=None):
        """For long steps (a model's preparation): raises Stopped when the job must
        stop, else returns False; `what` names the step for the message. Called at
        least once a second, a stop ends the step within that second."""
        if what:
            self.doing = what
        reason = self.stop_reason()
        if reason:
            raise Stopped(reason, self.doing)
        return False

    def phase(self, name, attrs=None):
        if self.writer is not None:
            self.writer.set_phase(name, attrs)

    def stop_reason(self):
        if self.signals is not None and self.signals.received:
            return INTERRUPTED if self.signals.received == "SIGINT" else \
                f"received {self.signals.received}"
        if self.deadline is not None and self.deadline.expired():
            return "deadline reached"
        return self.stop_when() if self.stop_when is not None else None

    def mark(self, status, reason=""):
        """Record the status in the checkpoint, after every resolution queued."""
        if self.writer is not None:
            self.writer.set_status(status, reason)


def resumable(ckpt, kind, attrs, matched):
    """`ckpt` if a job of `kind` with `attrs` may continue it, else CheckpointError."""
    out = ckpt.path
    if ckpt.kind != kind:
        raise CheckpointError(f"{out} is a {ckpt.attrs.get('kind')!r} checkpoint, not {kind}")
    if not ckpt.job_id:
        raise CheckpointError(f"cannot resume from {out}: written by an earlier lrmpi "
                              "(no job_id); run again with --overwrite")
    for key in matched:
        have = ckpt.attrs.get(key)
        if isinstance(attrs[key], Fingerprint):
            same = attrs[key].matches(have)
            attrs[key] = want = attrs[key]()  # this run's (the stored one's form may be older)
        else:
            want = attrs[key]() if callable(attrs[key]) else attrs[key]
            attrs[key], same = want, have == want
        if not same:
            what = "the inputs differ" if key == "fingerprint" else \
                f"it was made with {key}={have}, this run has {key}={want}"
            raise CheckpointError(f"cannot resume from {out}: {what}")
    return ckpt


def run_job(kind, out=None, opts=None, comm=None, stop_when=None):
    """Run a job of `kind` (a jobs.kind.JobKind built with `comm`) on every rank of
    `comm`; an Outcome on rank 0, None elsewhere."""
    opts = opts or JobOptions()
    start = time.perf_counter()
    comm = get_comm(comm)
    rank, _ = rank_size(comm)
    with StopSignals(root=rank == 0) as signals:
        if rank != 0:
            kind.serve()
            return None
        # HDF5 on the root only: the other ranks never open a checkpoint
        from lrmpi.jobs.checkpoint import CheckpointWriter, owned, schema
        from lrmpi.jobs.checkpoint.output import (OutputLock, check_output, check_side_file,
                                                  existing, input_file, sweep)
        lock = None
        try:
            if opts.overwrite and opts.resume:
                raise ConfigError("--resume and --overwrite exclude each other")
            if out is not None and not str(out).strip():
                raise ConfigError("-o/--output is empty: give a file name (or leave -o out "
                                  "to keep no results)")
            if out is not None and not _utf8(out):
                raise ConfigError(f"-o/--output {out!r} is not UTF-8 text: the job file links its "
                                  "resolution files by name, which HDF5 stores as UTF-8")
            if out:
                check_output(out, kind.inputs, opts.resume)
            check_side_file(config.get().stats_file, "LRMPI_STATS_FILE", out, kind.inputs)
            deadline = Deadline.resolve(opts.deadline, opts.time_margin)
            attrs = kind.prepare()
            ckpt = earlier = None
            if out:
                lock = OutputLock(out).acquire()
                found = existing(out, resume=opts.resume, overwrite=opts.overwrite)
                if found is not None and opts.resume and found.completed > 0:
                    ckpt = resumable(found, kind.name, attrs, kind.matched)
                elif found is not None and opts.resume:
                    logger.info("lrmpi: %s holds no resolution yet: starting from the "
                                "beginning", out)
                    earlier = found
                else:
                    earlier = found
                    if opts.resume:
                        logger.info("lrmpi: no checkpoint at %s yet: starting from the "
                                    "beginning", out)
                sweep(out, found)
            keep = ckpt.attrs.get("keep", "all") if ckpt is not None else opts.keep or "all"
            if ckpt is not None and opts.keep not in (None, keep):
                raise ConfigError(f"--keep {opts.keep}: {out} keeps {keep} resolution files; a "
                                  "resumed job keeps what it began with (leave --keep out)")
            if ckpt is not None and ckpt.status == "complete":
                logger.info("lrmpi: %s is already complete (%d resolutions); nothing to do",
                            out, ckpt.completed)
                kind.release()
                lock.release()
                return Outcome("complete", ckpt.completed, ckpt.planned,
                               "already complete", on_disk=True)
            attrs["started_at"] = time.time() - (time.perf_counter() - start)  # epoch s
            attrs[schema.PHASE] = "preparing"
            writer = CheckpointWriter(out, kind.name, attrs, fsync=opts.fsync, resume=ckpt,
                                      replace=earlier, clock=lambda: kind.elapsed(),
                                      keep=keep,
                                      protect=owned.protected(map(input_file, kind.inputs))) \
                if out else None
            if out is None:
                logger.info("lrmpi: no -o given: results are not kept")
            control = Control(signals, deadline, writer, stop_when)
        except BaseException:
            kind.release()
            if lock is not None:
                lock.release()
            raise
        try:
            stopped = _build(kind, control)
            if stopped is None:
                control.phase("computing", getattr(kind, "prepared", None))
                status, reason = kind.execute(control, writer, ckpt, start)
            else:
                status, reason = "deadline", stopped
        finally:
            try:
                kept = writer is not None and not writer.close()
            finally:
                if lock is not None:
                    lock.release()
    meta = kind.meta
    completed = len(meta) if stopped is None else (ckpt.completed if ckpt is not None else 0)
    # what the output holds of these inputs: this job's resolutions once its job file is
    # in place (a resumed job's earlier ones too when a stop ended its preparation), or
    # an earlier result of the same inputs it kept
    on_disk = writer is not None and (writer.kept_same_inputs() if kept else completed > 0)
    if kept and on_disk:
        logger.warning("lrmpi: kept the earlier result in %s: this run stopped (%s) with less",
                       out, reason or status)
    elif status == "deadline" and on_disk:
        logger.warning("lrmpi: stopping (%s) with resolution %d/%d on disk", reason,
                       completed, kind.planned)
    elif status == "deadline":
        logger.warning("lrmpi: stopping (%s) with no resolution of these inputs on disk%s",
                       reason, f" ({out} holds another job's result)" if kept else "")
    outcome = Outcome(status, completed, kind.planned, reason, meta, kept, on_disk)
    if opts.requeue and status == "deadline" and not outcome.interrupted:
        slurm.requeue(opts.max_restarts)
    return outcome


def _build(kind, control):
    """The kind's long preparation (if it has one), stoppable: None once built, or
    the message of the stop that ended it (the job file then says deadline, with
    it, and the other ranks are released)."""
    build = getattr(kind, "build", None)
    if build is None:
        return None
    try:
        build(control.should_stop)
        return None
    except Stopped as exc:
        control.mark("deadline", str(exc))
        kind.release()
        return str(exc)
    except BaseException as exc:
        control.mark("failed", f"{type(exc).__name__}: {exc}")
        kind.release()
        raise


def file_inputs(*specs):
    """The paths among `specs` (arrays are not files)."""
    return [s for s in specs if isinstance(s, (str, os.PathLike))]


def _utf8(path):
    """True if `path`'s bytes are UTF-8 (a name the job file's links can hold)."""
    try:
        os.fsencode(path).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
