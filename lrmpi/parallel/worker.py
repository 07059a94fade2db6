"""The worker side of every job: `serve`, the one loop of a worker rank, and the
handler of a layered matmul's messages (`worker_run`; the task farm's handler is
farm.FarmWorker).

The loop receives the root's messages until STOP. A handler does the kind's work
for each message; an exception is reported to the root (ERROR) instead of killing
the rank, and from then on the handler only drains what arrives. STOP is answered
with BYE and the number of results sent, so the root knows when every message has
arrived.

A matmul worker receives the Job once, then WORK headers each followed by the plane
blocks it does not hold yet; it computes the tile's exact level sums with the int8
kernels (tilework.compute_tile), in column chunks, and sends them back without
waiting (MPI_Isend): the root holds its next task queued, so the worker computes
it while the result travels (design.md, "Wire format").
"""
import numpy as np

from lrmpi.errors import ProtocolError
from lrmpi.numerics.buffers import ScratchPool, big_empty
from lrmpi.parallel import protocol
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import rank_size, waitall
from lrmpi.parallel.plan import Plan
from lrmpi.parallel.messages import CrtSetup, Job, Operand, Seal, Stop, Work
from lrmpi.parallel.stages import STAGES
from lrmpi.parallel.tilework import CrtWork, OwnedTiles, compute_tile

SENDS = 2  # results in flight at most: the next waits for the oldest (double buffers)


def serve(comm, handler):
    """Serve the root's messages with `handler` until STOP; 1 if a task failed, else 0.

    `handler.handle(msg, failed)` receives what follows `msg` and does its work
    (only drains once `failed`); returns the results it sent to the root.
    `handler.stop()` ends its job; `handler.started` says whether the root waits for
    a BYE (a matmul worker released before any JOB answers none; one that failed
    answers, since only a started job fails)."""
    rank, size = rank_size(comm)
    backoff = Backoff(cap=5e-3)
    sent, failed = 0, False
    while True:
        try:
            with STAGES.timed("wait for work"):
                msg = protocol.recv_from_root(comm, backoff)  # a bad one raises ProtocolError
            if isinstance(msg, Stop):
                break
            sent += handler.handle(msg, failed)
        except Exception as exc:
            failed = True
            protocol.send_error(comm, rank, size, exc)
    handler.stop()
    if handler.started or failed:  # the root waits for it (after a JOB it could not read too)
        protocol.send_bye(comm, sent, STAGES.report())
    return 1 if failed else 0


def worker_run(comm, rank_files=None):
    """A layered matmul's worker until STOP. `rank_files(write, rank)`: this rank's
    result files (jobs.checkpoint.rank_files), for jobs whose results the ranks write
    (Job.write)."""
    return serve(comm, MatmulWorker(comm, rank_files))


class MatmulWorker:
    """The messages of a layered matmul on a worker: JOB, CRT, WORK (+ PLANE), SEAL."""

    def __init__(self, comm, rank_files=None):
        self.comm, self.rank_files = comm, rank_files
        self.rank = rank_size(comm)[0]
        self.plan = self.crt = self.owned = None
        self.blocks, self.bcasts = {}, {}
        self.scratch = ScratchPool()
        self.sending = []  # (request, buffer) of results in flight, oldest first

    @property
    def started(self):
        return self.plan is not None

    def should_stop(self):
        return protocol.stop_waiting(self.comm)

    def handle(self, msg, failed):
        if isinstance(msg, Work):
            return self._work(msg, failed)
        if isinstance(msg, Job):
            self._job(msg)
        elif isinstance(msg, CrtSetup):  # the CRT resolution's setup, then B by broadcast
            self.crt = CrtWork(msg)
            self._post_bcasts(Operand.BF, msg.bcast)
        elif isinstance(msg, Seal):  # resolution r is complete: commit this rank's file of it
            # after this rank's error too: a tile's RESULT leaves only once the tile is
            # written, so every tile of a complete resolution is in its file whatever
            # failed since (a later resolution's write on a full disk)
            try:
                name, tiles = self.owned.files.seal(msg.res)
            except Exception:
                protocol.send_sealed(self.comm, msg.res, None, None)  # r cannot be listed
                if failed:
                    return 0  # the root has this rank's first error
                raise
            protocol.send_sealed(self.comm, msg.res, name, tiles)
        else:
            raise ProtocolError(f"a matmul worker received a {type(msg).__name__}")
        return 0

    def stop(self):
        if self.owned is not None:  # files never sealed: not results
            self.owned.files.abort()
        # every broadcast completes before BYE (the root posted them all), so a stop
        # never leaves one half-done (design.md, "Plane distribution"); so does every
        # result sent (BYE counts them, the root keeps their receives posted)
        with STAGES.timed("send"):
            waitall(list(self.bcasts.values()) + [req for req, _ in self.sending])
        self.sending = []

    def _job(self, job):
        protocol.send_hello(self.comm)
        waitall(list(self.bcasts.values()))  # a previous job's (a stream)
        STAGES.reset()
        self.plan, self.bcasts, self.crt = Plan.of_job(job), {}, None
        self.owned = OwnedTiles(self.plan, job.exps, self.rank_files(job.write, self.rank)) \
            if job.write else None
        self._post_bcasts(Operand.B, job.bcast)

    def _post_bcasts(self, op, numbers):
        """Receive buffers for the broadcast planes `numbers` of op (B's planes, or B in
        float64, (k, n)), whole, posted in the root's order: every column block is a
        view (blocks[(op, block, number)]); one request per plane (bcasts[(op, number)])."""
        tiling = self.plan.tiling
        for q in numbers:
            if op == Operand.BF:
                buf = big_empty((self.plan.k, tiling.n), np.float64)
            else:
                buf = big_empty((tiling.n, self.plan.k), np.int8)
            for cb in range(tiling.col_blocks):
                c0, c1 = tiling.cols(cb)
                self.blocks[(op, cb, q)] = buf[:, c0:c1] if op == Operand.BF else buf[c0:c1]
            self.bcasts[(op, q)] = protocol.post_bcast(self.comm, buf)

    def _work(self, work, failed):
        """A task: its plane blocks, then (unless failed or stopping) its result."""
        with STAGES.timed("receive planes"):
            for key in work.keys:
                self.blocks[key] = protocol.recv_plane(
                    self.comm, big_empty(self.plan.block_shape(key[0], key[1]),
                                         self.plan.block_dtype(key[0])))
        if failed or self.should_stop():
            return 0  # stopping: the root does not need this result
        plan, res = self.plan, work.res
        tile = plan.tiles[work.tile]
        with STAGES.timed("wait for broadcasts"):
            for key in sorted(plan.needs_bcast(res) & self.bcasts.keys()):
                self.bcasts.pop(key).Wait()  # the planes this task reads have arrived
        nlevels, dtype = plan.layout(res)
        buf, body = protocol.result_buffers(self.scratch, nlevels, tile.shape, dtype)
        with STAGES.timed("kernel") as kernel:
            value = compute_tile(plan, res, tile, self.blocks, body, self.scratch,
                                 self.should_stop, self.rank, self.crt)
        cpu = kernel.cpu  # the efficiency counts the kernel's CPU time, not wall time
        if value is None:
            self.scratch.put(buf)
            return 0
        if self.owned is not None:  # C to this rank's file; only its max travels
            with STAGES.timed("accumulate, decode, write"):
                amax = self.owned.write(res, tile, value)
            msg = protocol.pack_written(buf, work.task, amax, cpu)
        elif plan.is_crt(res):
            msg = protocol.pack_tile(buf, work.task, value, cpu)
        else:
            msg = protocol.pack_sums(buf, work.task, value, cpu)
        self._send(msg, buf)
        return 1

    def _send(self, msg, buf):
        """RESULT without waiting for it to arrive; buffers of finished sends return to
        the pool, and at most SENDS are in flight (the oldest is waited for)."""
        with STAGES.timed("send"):
            while self.sending and (len(self.sending) >= SENDS or self.sending[0][0].Test()):
                req, done = self.sending.pop(0)
                req.Wait()
                self.scratch.put(done)
            self.sending.append((protocol.send_result(self.comm, msg), buf))
