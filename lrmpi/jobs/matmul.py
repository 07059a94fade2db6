"""A layered matmul job on every rank: run_matmul (the CLI's and the MPI API's entry).

Call it on every rank; rank 0 returns an Outcome, the others return None once
the root releases them.
"""
import os
import time

import numpy as np

from lrmpi._version import __version__
from lrmpi.errors import CheckpointError, ConfigError
from lrmpi.jobs import inputs
from lrmpi.jobs.job import Fingerprint, InputWatch, JobOptions, file_inputs, run_job
from lrmpi.log import logger
from lrmpi.numerics import buffers
from lrmpi.numerics.layered import LayeredMatmul
from lrmpi.parallel import protocol
from lrmpi.parallel.comm import get_comm, rank_size
from lrmpi.parallel.stages import STAGES
from lrmpi.parallel.worker import worker_run

NUMERIC = ("bits", "planes", "order", "cutoff", "scale", "final", "moduli",
           "target")  # LayeredMatmul's options


class MatmulJob:
    """The matmul kind of job (a jobs.kind.JobKind)."""

    name = "matmul"
    # job parameters a resumed run must share with its checkpoint
    matched = ("bits", "planes", "order", "cutoff", "scale", "final", "moduli", "m", "n", "k",
               "fingerprint")

    def __init__(self, A, B, numeric, on_resolution=None, worker_timeout=None, comm=None,
                 write="root"):
        self.A, self.B, self.numeric, self.write = A, B, numeric, write
        self.comm, self.size = comm, rank_size(comm)[1]
        self.on_resolution, self.worker_timeout = on_resolution, worker_timeout
        self.inputs = file_inputs(A, B)
        self.root = None
        self.start = time.perf_counter()

    def prepare(self):
        STAGES.reset()
        with STAGES.timed("read"):  # open (memory-map) and check: NaN/Inf, row maxima
            self.lm = lm = LayeredMatmul(_operand(self.A, "A"), _operand(self.B, "B"),
                                         **self.numeric)
        logger.debug("lrmpi: inputs ready at %.3f s", time.perf_counter() - self.start)
        if lm.final == "crt":
            _note_crt_cost(lm)
        return {"bits": lm.bits, "planes": lm.planes, "order": lm.order,
                "cutoff": -1 if lm.cutoff is None else lm.cutoff, "scale": lm.scale,
                "final": lm.final or "none", "moduli": lm.moduli or 0,
                "m": lm.A.shape[0], "n": lm.B.shape[1], "k": lm.A.shape[1],
                "planned": lm.planned, "ranks": self.size, "lrmpi_version": __version__,
                "write": self.write,
                # hashing 2 x 128 MB takes ~0.3 s: the writer thread does it, unless
                # a resume needs it now
                "fingerprint": self._watched(Fingerprint(lm.A, lm.B))}

    def _watched(self, fp):
        self.watch = InputWatch(self.inputs, fp)
        return fp

    def _published(self, meta, C):
        """Rank 0, a finished resolution before it is recorded: were the inputs it read
        changed in place meanwhile (InputWatch)? Then the user's callback."""
        self.watch.check()
        if self.on_resolution is not None:
            self.on_resolution(meta, C)

    @property
    def planned(self):
        return self.lm.planned

    @property
    def meta(self):
        return self.root.meta if self.root is not None else []

    def elapsed(self):
        return self.root.elapsed() if self.root is not None else \
            time.perf_counter() - self.start

    def release(self):
        protocol.release(self.comm)

    def serve(self):
        worker_run(self.comm, _rank_files)

    def execute(self, control, writer, ckpt, start):
        from lrmpi.parallel.root import Root  # the root's alone (workers start sooner)
        try:
            self.root = Root(self.lm, self.comm, writer=writer, control=control, resume=ckpt,
                             start=start, on_resolution=self._published,
                             worker_timeout=self.worker_timeout, write=self.write)
        except BaseException:
            self.release()  # the workers still wait for JOB: STOP them, never a hang
            raise
        return self.root.run()


def _rank_files(write, rank):
    """A worker's result files (--write ranks): HDF5 is imported by the ranks that
    write (a worker's start is on every job's critical path: 3 processes share 2 cores
    here, and h5py is ~50 ms of each one's imports)."""
    from lrmpi.jobs.checkpoint.rank_files import RankFiles
    return RankFiles(write, rank)


def _note_crt_cost(lm):
    """Say so when the layers plus the CRT cost more than one float64 product here."""
    from lrmpi.numerics import crt, kernels
    isa = kernels.selected_isa()
    products = sum(len(p) for p in lm.schedule) + lm.moduli
    ratio = crt.cost_vs_float64(products, isa)
    if ratio > 1:
        logger.warning("lrmpi: %d layered pair products plus %d CRT moduli cost about %.1fx "
                       "one float64 product with the %s kernel; the early resolutions are "
                       "what lrmpi adds here", products - lm.moduli, lm.moduli, ratio, isa)


def _operand(x, name):
    return inputs.load(x, name) if isinstance(x, (str, os.PathLike)) else x


def run_matmul(A, B, out=None, *, comm=None, on_resolution=None, write="root", **options):
    """C = A @ B in layers over every rank of `comm` (lrmpi's COMM_WORLD duplicate).

    A, B: arrays (used on rank 0) or `.npy` / `FILE.h5:/dataset` paths (read by
    rank 0 only). `out`: checkpoint path (HDF5), optional. `on_resolution(meta,
    C)` is called on the root for each finished resolution (C is a read-only
    view of a buffer reused later: copy what you keep; None when the ranks wrote it). `write`: "root" (default) or
    "ranks": each worker writes its own tiles of C and level sums (rank_files.py),
    for many nodes on a shared file system. Options: the numerics (bits, planes, order, cutoff, scale; see
    LayeredMatmul) and the job's (see jobs.job.JobOptions: deadline, time_margin,
    resume, overwrite, fsync, requeue, max_restarts, worker_timeout). Returns an
    Outcome on rank 0, None on the other ranks.
    """
    opts, numeric = JobOptions.split(options)
    unknown = sorted(set(numeric) - set(NUMERIC))
    if unknown:
        raise TypeError(f"run_matmul: unknown option(s) {', '.join(unknown)}; valid: "
                        + ", ".join(NUMERIC + tuple(f for f in JobOptions.__dataclass_fields__)))
    comm = get_comm(comm)
    if write not in ("root", "ranks"):
        raise ConfigError(f"write must be root or ranks, got {write!r}")
    # every rank's buffers in 4 KiB pages (buffers.huge_pages): on the root too, whose
    # huge pages, prefaulted beside two busy workers on two cores, cost 4-5 s of system
    # CPU more at n = 8192 (the job 11.0-11.5 -> 8.1-8.4 s; fresh or fragmented memory)
    before = buffers.huge_pages(False)
    try:
        job = MatmulJob(A, B, numeric, on_resolution, opts.worker_timeout, comm, write)
        return run_job(job, out, opts, comm)
    finally:
        buffers.huge_pages(before)


def load_result(path, index=None):
    """(C, attrs) of resolution `index` (default: the last completed) of a checkpoint,
    every file read checked (its identity and checksums: damage is a CheckpointError);
    the files are first read in a child process (a damaged HDF5 file can crash the
    HDF5 library itself)."""
    from lrmpi.jobs.checkpoint import Checkpoint, schema
    ckpt = Checkpoint(path, safe=True)
    index = index or ckpt.completed
    if index < 1:
        raise CheckpointError(f"{path} holds no completed resolution yet")
    if ckpt.kind != "matmul":
        raise CheckpointError(f"{path} is an {ckpt.attrs.get('kind')} checkpoint: load_result "
                              "reads a matmul's C (`lrmpi inspect` shows it; its resolutions "
                              "hold scores, predicted, bound)")
    attrs, data = ckpt.resolution(index)
    return np.asarray(data[schema.RESULT]), attrs
