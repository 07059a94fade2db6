"""The CRT resolution on the root: residues, their blocks for the tasks, its C.

MPI-free. After the layers, one more resolution is computed tile by tile by the
same scheduler (numerics/crt.py has the mathematics): the root computes the
residues of A's rows and B's columns once, on a thread, while the layers run;
tasks then carry residue blocks (messages.Operand.RA / RB; plan.Plan.keys) as
layered tasks carry plane blocks, and return their tile of C in float64 (exact sums, one rounding per
entry, so any tiling gives the same C). Finished tiles are the resolution's
resume data: a job stopped inside it keeps them (checkpoint "partial" file) and a
resumed job computes only the others (design.md, "CRT resolution").
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lrmpi.numerics import crt
from lrmpi.parallel.messages import CrtSetup, Operand


class CrtStage:
    """The CRT resolution of `lm` (numerics.layered.LayeredMatmul with final="crt")
    for C of `shape`, drawn from `c_pool` (a BufferPool of C buffers)."""

    def __init__(self, lm, tiling, c_pool):
        self.lm, self.tiling, self.c_pool = lm, tiling, c_pool
        self.plan = crt.plan(lm.moduli)
        self.future = self.ops = None
        self.C, self.cmax, self.done = None, 0.0, []  # tiles (Tile) in C so far
        self.held = None  # the last layered resolution, until this one is finished

    @property
    def products(self):
        return self.plan.count

    def start(self):
        """Compute the residues on a thread (the kernels release the GIL)."""
        if self.future is None:
            pool = ThreadPoolExecutor(1, thread_name_prefix="lrmpi-crt-residues")
            self.future = pool.submit(crt.residues, self.lm.A, self.lm.B, self.plan,
                                      self.lm.crt_stats)
            pool.shutdown(wait=False)

    def ready(self):
        """True once the residues exist (re-raises what computing them raised)."""
        if self.ops is None and self.future is not None and self.future.done():
            self.ops = self.future.result()
        return self.ops is not None

    def setup(self, bcast=()):
        """What every rank computing its tasks needs besides residue blocks."""
        return CrtSetup(self.plan.count, self.ops.ea, self.ops.eb, tuple(bcast))

    def block(self, op, block, l):
        """Residues modulo modulus l of A's row block / B's column block."""
        if op == Operand.RA:
            r0, r1 = self.tiling.rows(block)
            return self.ops.RA[l, r0:r1]
        c0, c1 = self.tiling.cols(block)
        return self.ops.RB[l, c0:c1]

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
