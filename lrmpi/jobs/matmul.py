"""Running a layered matmul job on every rank: inputs, checkpoint, resume, deadline.

`run_matmul` is the entry point of the CLI and of the Python API under MPI:
call it on every rank; rank 0 returns an Outcome, the others return None once
the root releases them.
"""
import os
import time

import numpy as np

from lrmpi._version import __version__
from lrmpi.errors import CheckpointError
from lrmpi.jobs import inputs, slurm
from lrmpi.jobs.checkpoint import Checkpoint, CheckpointWriter
from lrmpi.jobs.deadline import Deadline, StopSignals
from lrmpi.log import logger
from lrmpi.numerics.layered import LayeredMatmul
from lrmpi.parallel.comm import get_comm, rank_size
from lrmpi.parallel.protocol import STOP_MESSAGE, Tag
from lrmpi.parallel.root import Outcome, Root, fingerprint, worker_run

# job parameters a resumed run must share with its checkpoint
MATCHED = ("bits", "planes", "order", "cutoff", "scale", "m", "n", "k", "fingerprint")


def _operand(x, name):
    return inputs.load(x, name) if isinstance(x, (str, os.PathLike)) else x


def run_matmul(A, B, out=None, *, bits=7, planes=4, order="antidiagonal", cutoff=None,
               scale="row", deadline=None, margin=None, resume=False, fsync=True,
               requeue=False, max_restarts=3, worker_timeout=None, comm=None,
               on_resolution=None):
    """C = A @ B in layers over every rank of `comm` (lrmpi's COMM_WORLD duplicate).

    A, B: arrays (used on rank 0) or `.npy` / `FILE.h5:/dataset` paths (read by
    rank 0 only). `out`: checkpoint path (HDF5), optional. `on_resolution(meta,
    C)` is called on the root for each finished resolution. `requeue`: inside
    SLURM, a run stopped by its deadline asks SLURM to requeue the job (at most
    `max_restarts` times; the job script resumes). Returns an Outcome on rank 0,
    None on the other ranks.
    """
    start = time.perf_counter()
    comm = get_comm(comm)
    rank, size = rank_size(comm)
    with StopSignals() as signals:
        if rank != 0:
            worker_run(comm)
            return None
        try:
            lm = LayeredMatmul(_operand(A, "A"), _operand(B, "B"), bits=bits, planes=planes,
                               order=order, cutoff=cutoff, scale=scale)
            logger.debug("lrmpi: inputs ready at %.3f s", time.perf_counter() - start)
            dl = Deadline.resolve(deadline, margin)
            attrs = {"bits": lm.bits, "planes": lm.planes, "order": lm.order,
                     "cutoff": -1 if lm.cutoff is None else lm.cutoff, "scale": lm.scale,
                     "m": lm.A.shape[0], "n": lm.B.shape[1], "k": lm.A.shape[1],
                     "planned": lm.planned, "ranks": size, "lrmpi_version": __version__,
                     # hashing 2 x 128 MB takes ~0.3 s: the writer thread does it,
                     # unless a resume needs it now
                     "fingerprint": lambda: fingerprint(lm.A, lm.B)}
            ckpt = None
            if resume and out and not os.path.exists(out):
                logger.info("lrmpi: no checkpoint at %s yet: starting from the beginning", out)
            elif resume and out:
                attrs["fingerprint"] = attrs["fingerprint"]()
                ckpt = _resumable(out, attrs)
            if ckpt is not None and ckpt.attrs.get("status") == "complete":
                logger.info("lrmpi: %s is already complete (%d resolutions)", out,
                            ckpt.attrs["completed"])
                _release(comm, size)
                return Outcome("complete", int(ckpt.attrs["completed"]), lm.planned,
                               "already complete")
            writer = CheckpointWriter(out, "matmul", attrs, fsync=fsync, resume=ckpt) \
                if out else None
            root = Root(lm, comm, writer=writer, deadline=dl, signals=signals, resume=ckpt,
                        start=start, on_resolution=on_resolution,
                        worker_timeout=worker_timeout)
        except BaseException:
            _release(comm, size)
            raise
        outcome = root.run()
    if requeue and outcome.status == "deadline":
        slurm.requeue(max_restarts)
    return outcome


def _release(comm, size):
    """Send STOP to workers still waiting for a job (the root failed before starting)."""
    for w in range(1, size):
        comm.Send(STOP_MESSAGE, dest=w, tag=Tag.STOP)


def _resumable(out, attrs):
    """The checkpoint at `out` if it matches this job (else CheckpointError)."""
    ckpt = Checkpoint(out, safe=True)
    if ckpt.attrs.get("kind") != "matmul":
        raise CheckpointError(f"{out} is a {ckpt.attrs.get('kind')!r} checkpoint, not matmul")
    for key in MATCHED:
        have, want = ckpt.attrs.get(key), attrs[key]
        if have != want:
            what = "the inputs differ (other A or B)" if key == "fingerprint" else \
                f"it was made with {key}={have}, this run has {key}={want}"
            raise CheckpointError(f"cannot resume from {out}: {what}")
    return ckpt


def load_result(path, index=None):
    """(C, attrs) of resolution `index` (default: the last completed) of a checkpoint."""
    ckpt = Checkpoint(path)
    index = index or int(ckpt.attrs.get("completed", 0))
    if index < 1:
        raise CheckpointError(f"{path} holds no completed resolution yet")
    attrs, data = ckpt.resolution(index)
    return np.asarray(data["C"]), attrs
