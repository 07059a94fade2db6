"""A task's work on one tile, wherever it runs: the same function on a worker (its
blocks received by PLANE messages) and on the root (its blocks are views of its own
encoded operands). MPI-free: `should_stop()` says, between column chunks, that a
STOP is waiting (a worker probes for it; the root's compute thread reads a flag).
"""
import time

import numpy as np

from lrmpi import config
from lrmpi.numerics import crt
from lrmpi.numerics.accumulate import ExactAccumulator
from lrmpi.numerics.layered import level_sums
from lrmpi.numerics.schedule import levels
from lrmpi.parallel import faults
from lrmpi.parallel.messages import Operand


def compute_tile(plan, res, tile, blocks, body, scratch, should_stop, rank, crt_work=None):
    """Task (res, tile) of `plan` into `body` (protocol.result_body of plan.layout(res)):
    [(level, S)] of the layers, the tile of C (float64) of the CRT resolution (with
    `crt_work`, a CrtWork); None if `should_stop()` said so between chunks.
    `blocks[(operand, block, plane)]`: the blocks plan.keys(res, tile) lists. `rank`
    names the rank for fault injection."""
    if faults.on_task(rank, should_stop):
        return None
    if plan.is_crt(res):
        return _crt_tile(blocks, tile, crt_work, body[0], scratch, should_stop, rank)
    return _level_sums(blocks, tile, plan.schedule[res], plan.bits, body, scratch,
                       should_stop, rank)


def _chunks(ncols):
    """Column chunks of a tile: each repacks only the tile's A rows (2 MB at k =
    4096), a few percent of the chunk's work; between two, a stopping job (deadline,
    signal, next job of a stream) waits for at most one chunk of a slow rank."""
    chunk = config.get().chunk_cols
    for c0 in range(0, ncols, chunk):
        yield c0, min(c0 + chunk, ncols)


def _level_sums(blocks, tile, pairs, bits, body, scratch, should_stop, rank):
    A = HeldPlanes(blocks, Operand.A, tile.rb)
    for c0, c1 in _chunks(tile.shape[1]):
        t0 = time.perf_counter()
        level_sums(A, HeldPlanes(blocks, Operand.B, tile.cb, c0, c1), pairs, bits,
                   out=body[:, :, c0:c1], scratch=scratch)
        faults.after_task(rank, time.perf_counter() - t0)
        if should_stop():
            return None
    return [(lv, body[i]) for i, lv in enumerate(levels(pairs))]  # body's order


def _crt_tile(blocks, tile, work, C, scratch, should_stop, rank):
    pl, setup = work.plan, work.setup
    RB = work.columns(tile, blocks[(Operand.BF, tile.cb, 0)])
    RA = work.rows(tile, blocks[(Operand.AF, tile.rb, 0)], scratch)
    ea = setup.ea[tile.r0:tile.r1]
    for c0, c1 in _chunks(tile.shape[1]):
        t0 = time.perf_counter()
        S = scratch.get((pl.count, tile.shape[0], c1 - c0), np.int32)
        crt.product_tile(pl, RA, RB[:, c0:c1], ea, setup.eb[tile.c0 + c0:tile.c0 + c1],
                         C[:, c0:c1], S)
        scratch.put(S)
        faults.after_task(rank, time.perf_counter() - t0)
        if should_stop():
            scratch.put(RA)
            return None
    scratch.put(RA)
    return C


class CrtWork:
    """The CRT resolution's tasks where they run (a worker, or the root's own compute):
    the setup, and the residues taken there from float64 blocks (design.md, "CRT
    resolution"): those of a column block of B once, kept (every tile of the block
    multiplies them), those of a tile's rows of A per task."""

    def __init__(self, setup):
        self.setup, self.plan = setup, crt.plan(setup.moduli)
        self.cols = {}   # column block -> (N, columns, k) int8

    def columns(self, tile, BF):
        """The residues of B's columns of `tile`'s block, BF (k, columns) float64."""
        R = self.cols.get(tile.cb)
        if R is None:
            R = self.cols[tile.cb] = crt.unit_residues(BF, 0, self.setup.eb[tile.c0:tile.c1],
                                                       self.plan)
        return R

    def rows(self, tile, AF, scratch):
        """The residues of A's rows of `tile`, AF (rows, k) float64, into a buffer of
        `scratch` (give it back)."""
        R = scratch.get((self.plan.count, AF.shape[0], AF.shape[1]), np.int8)
        return crt.unit_residues(AF, 1, self.setup.ea[tile.r0:tile.r1], self.plan, R)


class HeldPlanes:
    """Plane p of a block, rows [r0, r1) of it (all by default)."""

    def __init__(self, blocks, op, block, r0=0, r1=None):
        self.blocks, self.op, self.block, self.r0, self.r1 = blocks, op, block, r0, r1

    def __getitem__(self, p):
        return self.blocks[(self.op, self.block, p)][self.r0:self.r1]


class RootBlocks:
    """The root's blocks by (operand, block, plane): views of its encoded operands
    (planes) and of the operands themselves (`crt`: the CrtStage) — what MPI
    endpoints send and the root's own compute reads."""

    def __init__(self, ea, eb, tiling, crt=None):
        self.ea, self.eb, self.tiling, self.crt = ea, eb, tiling, crt

    def __getitem__(self, key):
        op, block, plane = key
        if op in (Operand.AF, Operand.BF):
            return self.crt.block(op, block)
        if op == Operand.A:
            if hasattr(self.ea, "block"):  # planes.RowBlocks: encoded block by block
                return self.ea.block(block)[plane - 1]
            r0, r1 = self.tiling.rows(block)
            return self.ea.digits[plane - 1, r0:r1]
        c0, c1 = self.tiling.cols(block)
        return self.eb.digits[plane - 1, c0:c1]


class OwnedTiles:
    """Results a worker writes itself (`--write ranks`): an exact accumulator for each
    tile it computes (the scheduler keeps a tile on one rank in this mode), each
    resolution's tile of C decoded here (the root's kernel and rounding: the same C)
    and written with its level sums to `files` (jobs.checkpoint.rank_files.RankFiles;
    design.md, "Results written by the ranks")."""

    def __init__(self, plan, exps, files):
        self.plan, self.files, self.acc = plan, files, {}
        self.erow, self.ecol = exps
        self.cbuf = {}  # a decoded tile per tile shape, reused (it is written at once)

    def write(self, res, tile, value):
        """Add a task's result, write the tile; returns max |C tile|."""
        if self.plan.is_crt(res):  # the tile of C itself
            self.files.put(res, tile, value)
            return float(np.abs(value).max()) if value.size else 0.0
        acc = self.acc.get(tile.index)
        if acc is None:
            acc = self.acc[tile.index] = ExactAccumulator(*tile.shape, self.plan.bits,
                                                          self.plan.planes, self.plan.k)
        for level, S in value:
            acc.add(S, level)
        C = self.cbuf.get(tile.shape)
        if C is None:
            C = self.cbuf[tile.shape] = np.empty(tile.shape)
        _, amax = acc.decode(self.erow[tile.r0:tile.r1], self.ecol[tile.c0:tile.c1], out=C,
                             with_max=True)
        self.files.put(res, tile, C, value)
        return float(amax)
