"""The CRT resolution on the root: its scaling, the blocks of its tasks, its C.

MPI-free. After the layers, one more resolution is computed tile by tile by the
same scheduler (numerics/crt.py has the mathematics): the root computes the
exponents of A's rows and B's columns (and the l1 norms the bound needs) once, on a
thread, while the layers run; tasks then carry A's rows and B's columns in float64
(messages.Operand.AF / BF; plan.Plan.keys: 8 bytes an element, where the residues
of 15 moduli are 15), the rank computing a task takes their residues
(tilework.CrtWork), and returns its tile of C in float64 (exact sums, one rounding
per entry, so any tiling gives the same C). Finished tiles are the resolution's
resume data: a job stopped inside it keeps them (checkpoint "partial" file) and a
resumed job computes only the others (design.md, "CRT resolution").
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lrmpi.numerics import crt
from lrmpi.parallel.messages import CrtSetup, Operand
from lrmpi.parallel.tilework import CrtWork


class CrtStage:
    """The CRT resolution of `lm` (numerics.layered.LayeredMatmul with final="crt")
    for C of `shape`, drawn from `c_pool` (a BufferPool of C buffers)."""

    def __init__(self, lm, tiling, c_pool):
        self.lm, self.tiling, self.c_pool = lm, tiling, c_pool
        self.plan = crt.plan(lm.moduli)
        self.future = self.ops = self._work = None
        self.C, self.cmax, self.done = None, 0.0, []  # tiles (Tile) in C so far
        self.columns = {}  # column block -> B's columns, contiguous (sent point to point)
        self.held = None  # the last layered resolution, until this one is finished

    @property
    def products(self):
        return self.plan.count

    def start(self):
        """Compute the scaling on a thread (the kernels release the GIL)."""
        if self.future is None:
            pool = ThreadPoolExecutor(1, thread_name_prefix="lrmpi-crt-scaling")
            self.future = pool.submit(crt.scaling, self.lm.A, self.lm.B, self.plan,
                                      self.lm.crt_stats)
            pool.shutdown(wait=False)

    def ready(self):
        """True once the scaling exists (re-raises what computing it raised)."""
        if self.ops is None and self.future is not None and self.future.done():
            self.ops = self.future.result()
        return self.ops is not None

    def setup(self, bcast=()):
        """What every rank computing its tasks needs besides their float64 blocks
        (`bcast`: (0,) when B comes whole by broadcast)."""
        return CrtSetup(self.plan.count, self.ops.ea, self.ops.eb, tuple(bcast))

    @property
    def work(self):
        """The root's own CrtWork (when it computes tasks too)."""
        if self._work is None:
            self._work = CrtWork(self.setup())
        return self._work

    def block(self, op, block):
        """A's rows of a row block (a view), or B's columns of a column block, (k,
        columns): B itself for one column block, else a contiguous copy (kept: it is
        sent to the block's worker, point to point)."""
        if op == Operand.AF:
            r0, r1 = self.tiling.rows(block)
            return self.lm.A[r0:r1]
        if self.tiling.col_blocks == 1:
            return self.lm.B
        if block not in self.columns:
            c0, c1 = self.tiling.cols(block)
            self.columns[block] = np.ascontiguousarray(self.lm.B[:, c0:c1])
        return self.columns[block]

    def add(self, tile, values):
        """A finished tile of C; returns the number of tiles in."""
        if self.C is None:
            self.C = self.c_pool.get()
        view = self.tile_of(tile)
        view[...] = values
        if view.size:
            self.cmax = max(self.cmax, float(np.abs(view).max()))
        self.done.append(tile)
        return len(self.done)

    def tile_of(self, tile):
        return self.C[tile.r0:tile.r1, tile.c0:tile.c1]

    def finish(self):
        """(C, max|C|) once every tile is in."""
        return self.C, self.cmax

    def hold(self, C, bound, cmax, release=None, users=1):
        """Keep the last layered resolution (C, its bound and max |C|) for the rule that
        this one never replaces a better one (crt_bound.finish); `release()` once
        neither it nor the `users - 1` others (the writer) need C any more."""
        self.held = [C, bound, cmax, users, release]

    def drop(self):
        """One user of the held resolution is done with it."""
        if self.held is not None:
            self.held[3] -= 1
            if self.held[3] == 0 and self.held[4] is not None:
                self.held[4]()

    def layers_result(self, decode):
        """(C, bound_abs, max |C|) of the last layered resolution: the held one, or
        `decode()`'s (a resumed job)."""
        if self.held is None:
            self.held = [*decode(), 1, None]
        return tuple(self.held[:3])

    def partial(self):
        """The finished tiles, as (r0, r1, c0, c1) rows (resume data)."""
        return np.array([(t.r0, t.r1, t.c0, t.c1) for t in self.done], np.int64).reshape(-1, 4)
