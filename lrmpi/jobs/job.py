"""The job skeleton every kind shares (matmul, infer): run_job.

On rank 0: guard the output (not an input, not a foreign file, one writer),
prepare the inputs, resolve the deadline, decide between a fresh run, a resume
and the replacement of an earlier result, open the checkpoint writer, run the
kind's loop, record the status, requeue under SLURM. On the other ranks: serve
the kind's loop. Signals (SIGTERM, SIGUSR1, SIGUSR2, SIGINT) become a stop flag on
the root and are ignored by the other ranks, which wait for the root's STOP.

A kind implements jobs.kind.JobKind: `name`, `matched` (attributes a resumed run
must share with its checkpoint), `inputs` (the paths it reads), prepare() ->
checkpoint attributes, `planned`, `meta`, elapsed(), release(), serve() and
execute(control, writer, ckpt, start) -> (status, reason).
"""
import hashlib
import os
import time
from dataclasses import dataclass, field, fields

import numpy as np

from lrmpi.errors import CheckpointError, ConfigError
from lrmpi.jobs import slurm
from lrmpi.jobs.deadline import Deadline, StopSignals
from lrmpi.log import logger
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
        return self.reason == INTERRUPTED


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


def fingerprint(*parts):
    """SHA-256 (first 128 bits) of arrays (shapes and values) and other parts (their
    repr): what a resumed job must match. Values are hashed as float64, except
    float32 arrays, hashed as they are (with a tag): their float64 copy doubled
    the bytes, and this hash is written before the first resolution can be.
    SHA-256 because x86 has instructions for it: 1.5 GB/s, blake2b 0.9."""
    h = hashlib.sha256()
    for x in parts:
        if isinstance(x, np.ndarray):
            h.update(np.asarray(x.shape, np.int64).tobytes())
            f32 = x.dtype == np.float32
            if f32:
                h.update(b"float32")
            flat = x.reshape(-1) if x.flags.c_contiguous else np.ascontiguousarray(x).reshape(-1)
            for i in range(0, flat.size, 1 << 20):
                part = np.ascontiguousarray(flat[i:i + (1 << 20)],
                                            np.float32 if f32 else np.float64)
                h.update(memoryview(part).cast("B"))
        else:
            h.update(repr(x).encode())
    return h.hexdigest()[:32]


class Control:
    """What a job's loop asks of the job: when to stop, and recording its status."""

    def __init__(self, signals=None, deadline=None, writer=None, stop_when=None):
        self.signals, self.deadline, self.writer = signals, deadline, writer
        self.stop_when = stop_when

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
    if ckpt.attrs.get("kind") != kind:
        raise CheckpointError(f"{out} is a {ckpt.attrs.get('kind')!r} checkpoint, not {kind}")
    if not ckpt.job_id:
        raise CheckpointError(f"cannot resume from {out}: written by an earlier lrmpi "
                              "(no job_id); run again with --overwrite")
    for key in matched:
        have = ckpt.attrs.get(key)
        want = attrs[key]() if callable(attrs[key]) else attrs[key]
        attrs[key] = want
        if have != want:
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
        from lrmpi.jobs.checkpoint import CheckpointWriter, owned
        from lrmpi.jobs.checkpoint.output import (OutputLock, check_output, existing,
                                                  input_file, sweep)
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
            attrs = kind.prepare()
            deadline = Deadline.resolve(opts.deadline, opts.time_margin)
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
            if ckpt is not None and ckpt.attrs.get("status") == "complete":
                logger.info("lrmpi: %s is already complete (%d resolutions); nothing to do",
                            out, ckpt.completed)
                kind.release()
                lock.release()
                return Outcome("complete", ckpt.completed, int(ckpt.attrs.get("planned", 0)),
                               "already complete", on_disk=True)
            attrs["started_at"] = time.time() - (time.perf_counter() - start)  # epoch s
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
            status, reason = kind.execute(control, writer, ckpt, start)
        finally:
            try:
                kept = writer is not None and not writer.close()
            finally:
                if lock is not None:
                    lock.release()
    meta = kind.meta
    # what the output holds of these inputs: this job's resolutions once its job file is
    # in place, or an earlier result of the same inputs it kept
    on_disk = writer is not None and (writer.kept_same_inputs() if kept else len(meta) > 0)
    if kept and on_disk:
        logger.warning("lrmpi: kept the earlier result in %s: this run stopped (%s) with less",
                       out, reason or status)
    elif status == "deadline" and on_disk:
        logger.warning("lrmpi: stopping (%s) with resolution %d/%d on disk", reason,
                       len(meta), kind.planned)
    elif status == "deadline":
        logger.warning("lrmpi: stopping (%s) with no resolution of these inputs on disk%s",
                       reason, f" ({out} holds another job's result)" if kept else "")
    if opts.requeue and status == "deadline" and reason != INTERRUPTED:
        slurm.requeue(opts.max_restarts)
    return Outcome(status, len(meta), kind.planned, reason, meta, kept, on_disk)


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
