"""What the root and every worker derive alike from a job: its tiles, each
resolution's tasks, the blocks they read and the results they return. Pure: no
MPI, no operands (the root builds a Plan from the LayeredMatmul, a worker from the
JOB message; both then agree on every buffer's shape and dtype).

Resolutions are 0-based: 0 .. layers-1 are the layers of digit planes (schedule),
`layers` is the CRT resolution when the job has one (numerics/crt.py).
"""
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lrmpi.numerics.layered import sum_dtype
from lrmpi.numerics.schedule import levels
from lrmpi.parallel.partition import Tiling
from lrmpi.parallel.messages import Job, Operand
from lrmpi.parallel.protocol import ResultKind


@dataclass(frozen=True)
class Plan:
    bits: int
    planes: int
    k: int
    schedule: tuple          # resolutions of digit planes, each a tuple of (p, q) pairs
    tiling: Tiling
    moduli: int = 0          # of the CRT resolution after the layers (0: none)
    written: bool = False    # results written by the ranks (each worker decodes its tiles)

    @classmethod
    def of_job(cls, job):
        return cls(job.bits, job.planes, job.k, tuple(job.schedule), Tiling(*job.tiling),
                   job.crt, bool(job.write))

    def job(self, bcast=(), write=(), exps=()):
        """The JOB message of this plan (`bcast`: B's planes broadcast; `write`, `exps`:
        results written by the ranks, see messages.Job)."""
        t = self.tiling
        return Job(self.bits, self.planes, self.k, tuple(self.schedule),
                   (t.m, t.n, t.row_blocks, t.col_blocks), tuple(bcast), self.moduli,
                   tuple(write), tuple(exps))

    @property
    def layers(self):
        return len(self.schedule)

    @property
    def nres(self):
        return self.layers + (1 if self.moduli else 0)

    @cached_property
    def tiles(self):
        return self.tiling.tiles()

    def is_crt(self, res):
        return res == self.layers

    def layout(self, res):
        """(arrays, dtype) of a task's result body at resolution res: its level sums
        (int32 or int64: layered.sum_dtype), or one float64 tile of C (CRT)."""
        if self.is_crt(res):
            return 1, np.float64
        pairs = self.schedule[res]
        return len(levels(pairs)), sum_dtype(pairs, self.k, self.bits)

    def result_kind(self, res):
        """What a RESULT of resolution res carries on the wire."""
        if self.written:
            return ResultKind.WRITTEN
        return ResultKind.TILE if self.is_crt(res) else ResultKind.SUMS

    def keys(self, res, tile):
        """The (operand, block, plane) blocks a task of resolution res on `tile` reads:
        digit planes, or (the CRT resolution) the float64 blocks whose residues it
        takes (8 bytes an element, where 15 residues are 15)."""
        if self.is_crt(res):
            return {(Operand.AF, tile.rb, 0), (Operand.BF, tile.cb, 0)}
        pairs = self.schedule[res]
        return ({(Operand.A, tile.rb, p) for p, _ in pairs}
                | {(Operand.B, tile.cb, q) for _, q in pairs})

    def block_shape(self, op, block):
        """(rows, k) of one plane of a block: A's rows are cut by C's row blocks, B's by
        its column blocks; B's float64 columns are (k, columns)."""
        if op == Operand.BF:
            c0, c1 = self.tiling.cols(block)
            return self.k, c1 - c0
        r0, r1 = self.tiling.rows(block) if op in (Operand.A, Operand.AF) else \
            self.tiling.cols(block)
        return r1 - r0, self.k

    @staticmethod
    def block_dtype(op):
        """What a block of op holds: int8 digits, or float64 operand values."""
        return np.float64 if op in (Operand.AF, Operand.BF) else np.int8

    def weights(self):
        """A task's work per resolution, in the units the scheduler compares durations in:
        pair products, or moduli + 1 for the CRT (its reconstruction)."""
        return [len(p) for p in self.schedule] + [self.moduli + 1] * (self.nres - self.layers)

    def needs_bcast(self, res):
        """(operand, number) of the broadcast planes a task of res reads (all of B's it
        uses, or B in float64)."""
        if self.is_crt(res):
            return {(Operand.BF, 0)}
        return {(Operand.B, q) for _, q in self.schedule[res]}


def shared_b(tiling, workers):
    """(design.md, "Plane distribution") Whether B's blocks are each needed by several workers: one column block (all
    of them need it), or a 2-D tiling (every row block's owner needs each column
    block). Column blocks in one row (wide C) go to one worker each: point to
    point sends B once already, and a broadcast would give every worker all of it."""
    return workers >= 2 and (tiling.col_blocks == 1 or tiling.row_blocks > 1)


def bcast_planes(schedule, tiling, workers):
    """B's planes that every worker will need, to broadcast once (collective: the root
    sends about one copy whatever the number of workers) instead of one point-to-point
    copy per worker: all of B's planes the schedule uses, when several workers need
    each of its blocks (shared_b). A plane travels whole; a worker holds every column
    block of it (views)."""
    if not shared_b(tiling, workers):
        return ()
    return tuple(sorted({q for pairs in schedule for _, q in pairs}))


def crt_bcast(moduli, tiling, workers):
    """(0,) when B in float64 goes to every worker by broadcast for the CRT resolution
    (the same rule as bcast_planes), else ()."""
    return (0,) if moduli and shared_b(tiling, workers) else ()


def held_by_broadcast(op, numbers, tiling):
    """The blocks of planes (or residues) `numbers` of op that reach every worker by
    broadcast, whole: each of their column blocks, never to send point to point."""
    return {(op, cb, q) for q in numbers for cb in range(tiling.col_blocks)}
