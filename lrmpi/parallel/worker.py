"""The worker side of a distributed layered matmul: worker_run serves tasks until STOP.

A worker receives the Job once, then WORK headers each followed by the plane
blocks it does not hold yet; it computes the tile's exact level sums with the int8
kernels, in column chunks, and sends them back. An exception is reported to the
root (ERROR) instead of killing the rank; STOP is answered with BYE and the number
of results sent, so the root knows when every message has arrived.
"""
import socket
import time

import numpy as np

from lrmpi import config
from lrmpi.numerics import crt
from lrmpi.numerics.accumulate import ExactAccumulator
from lrmpi.numerics.buffers import ScratchPool
from lrmpi.numerics.layered import level_sums, sum_dtype
from lrmpi.numerics.schedule import levels, n_levels
from lrmpi.parallel import faults, protocol
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import mpi, next_tag_from_root, rank_size
from lrmpi.parallel.partition import Tiling
from lrmpi.parallel.protocol import Operand, Tag


def worker_run(comm, rank_files=None):
    """Serve WORK until STOP; report exceptions to the root instead of dying.
    `rank_files(write, rank)`: this rank's result files (jobs.checkpoint.rank_files),
    for jobs whose results the ranks write (Job.write)."""
    MPI = mpi()
    rank, size = rank_size(comm)
    status, backoff = MPI.Status(), Backoff(cap=5e-3)
    job = crt_setup = owned = None
    planes, sent, failed, bcasts = {}, 0, False, {}
    scratch = ScratchPool()
    while True:
        tag = next_tag_from_root(comm, status, backoff)
        if tag == Tag.STOP:
            comm.Recv(protocol.stop_buffer(), source=0, tag=Tag.STOP)
            if owned is not None:  # files never sealed: not results
                owned.files.abort()
            if job is not None:  # the root only waits for BYE once the job started
                MPI.Request.Waitall(list(bcasts.values()))  # the root posted them all
                comm.send(sent, dest=0, tag=Tag.BYE)
            return 1 if failed else 0
        if tag == Tag.SEAL:  # resolution r is complete: commit this rank's file of it
            r = np.empty(protocol.SEAL_LEN, np.int64)
            comm.Recv(r, source=0, tag=Tag.SEAL)
            try:
                name, written = owned.files.seal(int(r[0])) if not failed else (None, [])
                comm.send((int(r[0]), name, written), dest=0, tag=Tag.SEALED)
            except Exception as exc:
                failed = True
                comm.send(protocol.error_message(rank, size, exc), dest=0, tag=Tag.ERROR)
            continue
        if tag == Tag.JOB:
            job = comm.recv(source=0, tag=Tag.JOB).check()
            comm.send(socket.gethostname(), dest=0, tag=Tag.HELLO)
            tiling = Tiling(*job.tiling)
            tiles = tiling.tiles()
            MPI.Request.Waitall(list(bcasts.values()))  # a previous job's (a stream)
            bcasts, crt_setup = {}, None
            owned = OwnedTiles(job, rank_files(job.write, rank)) if job.write else None
            _post_bcasts(comm, planes, bcasts, Operand.B, job.bcast, tiling, job.k)
            continue
        if tag == Tag.CRT:  # the CRT resolution's setup, then its broadcast residues
            crt_setup = comm.recv(source=0, tag=Tag.CRT)
            _post_bcasts(comm, planes, bcasts, Operand.RB, crt_setup.bcast, tiling, job.k)
            continue
        header = protocol.work_buffer()
        comm.Recv(header, source=0, tag=Tag.WORK)
        task, res, tile_index, keys = protocol.decode_work(header)
        for op, block, plane in keys:
            r0, r1 = tiling.rows(block) if protocol.is_rows_of_a(op) else tiling.cols(block)
            buf = np.empty((r1 - r0, job.k), np.int8)
            comm.Recv(buf, source=0, tag=Tag.PLANE)
            planes[(op, block, plane)] = buf
        if failed or comm.Iprobe(source=0, tag=Tag.STOP):
            continue  # stopping: the root does not need this result
        try:
            faults.on_task(rank)
            tile = tiles[tile_index]
            is_crt = res == len(job.schedule)
            needs = ({(Operand.RB, l) for l in range(crt_setup.moduli)} if is_crt else
                     {(Operand.B, q) for _, q in job.schedule[res]})
            for key in sorted(needs & bcasts.keys()):
                bcasts.pop(key).Wait()  # the planes this task reads have arrived
            if is_crt:
                nl, dtype = 1, np.float64
            else:
                pairs = job.schedule[res]
                nl, dtype = n_levels(pairs), sum_dtype(pairs, job.k, job.bits)
            buf = scratch.get((protocol.result_size(nl, tile.shape, dtype),), np.int64)
            body = protocol.result_body(buf, nl, tile.shape, dtype)
            t0 = time.perf_counter()
            if is_crt:
                sums = compute_crt(comm, rank, planes, tile, crt_setup, body[0], scratch)
            else:
                sums = compute(comm, rank, planes, tile, pairs, job.bits, body, scratch)
            if sums is not None:
                if owned is not None:  # C to this rank's file; only its max travels
                    msg = protocol.encode_written(buf, task, owned.write(res, tile, sums),
                                                  time.perf_counter() - t0)
                else:
                    msg = protocol.encode_result(buf, task, sums, time.perf_counter() - t0)
                comm.Send(msg, dest=0, tag=Tag.RESULT)
                sent += 1
            scratch.put(buf)
        except Exception as exc:
            failed = True
            comm.send(protocol.error_message(rank, size, exc), dest=0, tag=Tag.ERROR)


class OwnedTiles:
    """Results this rank writes itself (Job.write): an exact accumulator for each
    tile it computes (the scheduler keeps a tile on one rank in this mode), each
    resolution's tile of C decoded here and written with its level sums."""

    def __init__(self, job, files):
        self.job, self.files, self.acc = job, files, {}
        self.erow, self.ecol = job.exps
        self.cbuf = {}  # a decoded tile per tile shape, reused (it is written at once)

    def write(self, res, tile, sums):
        """Add a task's result, write the tile; returns max |C tile|."""
        if res == len(self.job.schedule):  # the CRT resolution: the tile of C itself
            (_, C), = sums
            self.files.put(res, tile, C)
            return float(np.abs(C).max()) if C.size else 0.0
        acc = self.acc.get(tile.index)
        if acc is None:
            acc = self.acc[tile.index] = ExactAccumulator(*tile.shape, self.job.bits,
                                                          self.job.planes, self.job.k)
        for level, S in sums:
            acc.add(S, level)
        C = self.cbuf.get(tile.shape)
        if C is None:
            C = self.cbuf[tile.shape] = np.empty(tile.shape)
        _, amax = acc.decode(self.erow[tile.r0:tile.r1], self.ecol[tile.c0:tile.c1], out=C,
                             with_max=True)
        self.files.put(res, tile, C, sums)
        return float(amax)


def _post_bcasts(comm, planes, bcasts, op, numbers, tiling, k):
    """Receive buffers for the broadcast planes `numbers` of operand op (B's planes or
    residues), whole, posted in the root's order: every column block is a view
    (planes[(op, block, number)]); one request per plane (bcasts[(op, number)])."""
    for q in numbers:
        buf = np.empty((tiling.n, k), np.int8)
        for cb in range(tiling.col_blocks):
            c0, c1 = tiling.cols(cb)
            planes[(op, cb, q)] = buf[c0:c1]
        bcasts[(op, q)] = comm.Ibcast(buf, root=0)


def compute_crt(comm, rank, planes, tile, setup, C, scratch):
    """A CRT task: the tile of C (float64) into `C`, column chunk by column chunk
    (STOP looked for between them); [(CRT_LEVEL, C)], or None if STOP came."""
    pl = crt.plan(setup.moduli)
    RA = [planes[(Operand.RA, tile.rb, l)] for l in range(pl.count)]
    ea = setup.ea[tile.r0:tile.r1]
    chunk = config.get().chunk_cols
    for c0 in range(0, tile.shape[1], chunk):
        c1 = min(c0 + chunk, tile.shape[1])
        t0 = time.perf_counter()
        RB = [planes[(Operand.RB, tile.cb, l)][c0:c1] for l in range(pl.count)]
        S = scratch.get((pl.count, tile.shape[0], c1 - c0), np.int32)
        crt.product_tile(pl, RA, RB, ea, setup.eb[tile.c0 + c0:tile.c0 + c1], C[:, c0:c1], S)
        scratch.put(S)
        faults.after_task(rank, time.perf_counter() - t0)
        if comm.Iprobe(source=0, tag=Tag.STOP):
            return None
    return [(protocol.CRT_LEVEL, C)]


def compute(comm, rank, planes, tile, pairs, bits, body, scratch):
    """A task's level sums into `body`, chunk by chunk; None if STOP came meanwhile.

    Between chunks the worker looks for STOP, so a stopping job (deadline,
    signal, next job of a stream) waits for at most one chunk of a slow worker,
    not for its whole task. Chunks are column ranges: each repacks only the
    tile's A rows (2 MB at k = 4096), a few percent of the chunk's work.
    """
    A = HeldPlanes(planes, Operand.A, tile.rb)
    chunk = config.get().chunk_cols
    for c0 in range(0, tile.shape[1], chunk):
        c1 = min(c0 + chunk, tile.shape[1])
        t0 = time.perf_counter()
        level_sums(A, HeldPlanes(planes, Operand.B, tile.cb, c0, c1), pairs, bits,
                   out=body[:, :, c0:c1], scratch=scratch)
        faults.after_task(rank, time.perf_counter() - t0)
        if comm.Iprobe(source=0, tag=Tag.STOP):
            return None
    return [(lv, body[i]) for i, lv in enumerate(levels(pairs))]  # body's order


class HeldPlanes:
    """Plane p of a received block, rows [r0, r1) of it (all by default)."""

    def __init__(self, planes, op, block, r0=0, r1=None):
        self.planes, self.op, self.block, self.r0, self.r1 = planes, op, block, r0, r1

    def __getitem__(self, p):
        return self.planes[(self.op, self.block, p)][self.r0:self.r1]
