"""C of each resolution, assembled on the root from its tiles' exact level sums.

MPI-free. Each tile's sums go into the exact multi-limb accumulator and that tile
of C_r is decoded at once (one correct rounding), so max|C_r| is known when the
last tile arrives; exact integers make C the same in any tile order, at any number
of ranks (design.md, "Numbers", Determinism). A fresh run's first resolution is a single level sum on a zero
accumulator: its tiles decode straight from the sums (accumulate.decode_sum) and
the sums go into the limbs only once C_1 is out — the limbs are hundreds of MB
whose first touch would otherwise delay resolution 1. When that decode is exact
(C_1 is its own resume data), the sums are not even kept: they are C_1 again
(settle(), after C_1 is published), and their buffers go back at once (n = 4096:
the root's peak held 8 such buffers of 8 MiB through resolution 1).
"""
import numpy as np

from lrmpi.numerics.accumulate import STREAMED, ExactAccumulator, TileSums
from lrmpi.numerics.buffers import BufferPool, ScratchPool, prefault
from lrmpi.numerics.schedule import levels
from lrmpi.parallel.stages import STAGES


class Assembly:
    """Tiles in, finished resolutions out, for an m x n product.

    `keep_sums`: hold each resolution's level sums until the checkpoint has written
    them (they are its resume data); without a checkpoint, buffers go back at once.
    `sums_to`: the checkpoint writer, to which each tile's sums go as they are in the
    exact state (write_sums: their buffer comes back once they are on their way to
    the disk), instead of being held until the resolution is done.
    """

    def __init__(self, ea, eb, schedule, sdtype, keep_sums, c_buffers=1, sums_to=None):
        m, k = ea.shape
        n = eb.shape[0]
        self.shape, self.schedule, self.sdtype = (m, n), schedule, sdtype
        self.erow, self.ecol = ea.exps, eb.exps
        self.acc = ExactAccumulator(m, n, ea.bits, ea.planes, k)
        self.scratch = ScratchPool()             # result buffers of tiles in flight
        # C being assembled; the next resolution's first tile waits for the disk to
        # have it (its tiles are streamed as they come: the wait is the writer's lag,
        # measured 0.02-0.15 s at n = 4096, no later durable times). A second buffer
        # held ~1/5 of the root's peak memory (4096: 958 -> 758 MB VmHWM); a CRT
        # resolution needs one (`c_buffers` 2) while the last layered C is held for
        # its rule (crt_stage.hold)
        self.c_pool = BufferPool((m, n), np.float64, c_buffers)
        self.held = {} if keep_sums else None
        # a matrix without entries has no tiles to stream: its (empty) sums are held
        self.sums_to = sums_to if keep_sums and m and n else None
        self.cbuf, self.tile_max, self.ntiles = {}, {}, {}
        self.deferred = None
        self.c1_is_sums = False

    def sums_from_c(self, C):
        """[(level, S)] of resolution 1 from its C (when c1_is_sums held)."""
        level = levels(self.schedule[0])[0]
        return [(level, self.acc.sum_from_decoded(C, level, self.erow, self.ecol,
                                                  self.sdtype[0]))]

    def resume(self, completed, sums_of):
        """Continue after `completed` resolutions: `sums_of(i)` gives [(level, S)] of
        resolution i (1-based), added again into the exact accumulator."""
        for i in range(1, completed + 1):
            for level, S in sums_of(i):
                self.acc.add(S, level)

    def start(self, first):
        """Before the first result: from resolution `first` (0-based) on."""
        if first == 0 and len(levels(self.schedule[0])) == 1:
            self.deferred = []
        # resolution 1 decoded exactly from its sums: C_1 is its own resume data
        # (not when resolution 1 is the last layer: its fallback may change C_1)
        self.c1_is_sums = self.deferred is not None and len(self.schedule) > 1 and \
            self.acc.sum_is_decoded_exactly(self.sdtype[0], levels(self.schedule[0])[0],
                                            self.erow, self.ecol)
        # the first C buffer and the exact state are hundreds of MB at n = 4096: fault
        # them in on a thread; the state, if resolution 1 does not need it, when a
        # core would be idle (all of it at once when resolution 2 began stalled the
        # collector: 2.5 s of CPU at n = 8192 on the loaded machine)
        deferred = self.deferred is not None
        prefault([(self.c_pool, 1)], [] if deferred else self.acc.state,
                 later=self.acc.state if deferred else ())

    def add(self, r, tile, sums, buf):
        """One tile's level sums of resolution r (in resolution order); True when r
        is complete."""
        if r not in self.cbuf:
            self.cbuf[r] = self.c_pool.get()
        C = self.cbuf[r][tile.r0:tile.r1, tile.c0:tile.c1]
        erow, ecol = self.erow[tile.r0:tile.r1], self.ecol[tile.c0:tile.c1]
        if r == 0 and self.deferred is not None:
            (level, S), = sums
            with STAGES.timed("accumulate and decode"):
                self.acc.decode_sum(S, level, erow, ecol, out=C)
                amax = max(float(C.max()), -float(C.min()))  # the tile is still in cache
            if self.c1_is_sums:   # the sums are C_1's tile again: the buffer goes back
                self.deferred.append((tile, None, None))
                self.scratch.put(buf)
            else:
                self.deferred.append((tile, sums, buf))
        else:
            with STAGES.timed("accumulate and decode"):  # one pass (compact state)
                amax = self.acc.add_decode(sums, erow, ecol, C, tile.r0, tile.c0)
            self._done_with(r, tile, sums, buf)
        # max|C_r| tile by tile, as the tiles are decoded: no pass over C at the end
        self.tile_max[r] = max(self.tile_max.get(r, 0.0), amax)
        self.ntiles[r] = self.ntiles.get(r, 0) + 1
        return self.ntiles[r]

    def finish(self, r):
        """(C_r, max|C_r|) once every tile of r is in. C_r is a pooled buffer: give it
        back with release() (after the checkpoint wrote it)."""
        C = self.cbuf.pop(r)
        cmax = self.tile_max.pop(r)
        if self.deferred and not self.c1_is_sums:  # resolution 1 is out: now its sums
            for tile, sums, buf in self.deferred:  # go into the limbs
                with STAGES.timed("accumulate"):
                    for level, S in sums:
                        self.acc.add(S, level, tile.r0, tile.c0)
                self._done_with(r, tile, sums, buf)
            self.deferred = None
        return C, cmax

    def settle(self, C1):
        """Resolution 1's sums into the limbs, taken from C_1 (exactly: c1_is_sums),
        once C_1 is on its way to the disk; before any tile of resolution 2 (the same
        thread). C_1 unchanged since it was decoded (its callback gets it read-only)."""
        if not self.c1_is_sums or not self.deferred:
            self.deferred = None
            return
        level = levels(self.schedule[0])[0]
        with STAGES.timed("accumulate"):
            for tile, _, _ in self.deferred:
                for i0 in range(tile.r0, tile.r1, 64):  # 2 MiB of float64 at a time
                    i1 = min(i0 + 64, tile.r1)
                    S = self.acc.sum_from_decoded(C1[i0:i1, tile.c0:tile.c1], level,
                                                  self.erow[i0:i1], self.ecol[tile.c0:tile.c1],
                                                  self.sdtype[0])
                    self.acc.add(S, level, i0, tile.c0)
        self.deferred = None

    def decoded(self):
        """C of the exact state as it stands (all of it, a new array): on the thread
        that applies the results, so every sum handed in before is in the state."""
        return self.acc.decode(self.erow, self.ecol, out=np.empty(self.shape))

    def tile_of(self, r, tile):
        """The decoded tile of C_r (a view of its buffer)."""
        return self.cbuf[r][tile.r0:tile.r1, tile.c0:tile.c1]

    def resume_data(self, r):
        """(TileSums of resolution r, or None when C_r is its own resume data; their
        buffers) for the checkpoint."""
        if self._streams(r):
            return STREAMED, []
        if r == 0 and self.c1_is_sums:  # no sums held: they are C_1's (settle)
            return None, []
        held = self.held.pop(r)
        ts = TileSums(levels(self.schedule[r]), self.shape, self.sdtype[r],
                      [(tile.r0, tile.c0, [S for _, S in sums]) for tile, sums, _ in held])
        return ts, [buf for _, _, buf in held]

    def release(self, C, bufs=()):
        """C (unless None) and result buffers may be reused (called from the writer
        thread too)."""
        if C is not None:
            self.c_pool.put(C)
        for buf in bufs:
            self.scratch.put(buf)

    def _streams(self, r):
        """Whether resolution r's level sums go to the writer tile by tile (not when C_1
        is its own resume data: resolution 1 then has no sums file)."""
        return self.sums_to is not None and not (r == 0 and self.c1_is_sums)

    def _done_with(self, r, tile, sums, buf):
        """A result is in the limbs: its buffer waits for the checkpoint or is free."""
        if self.held is None:
            self.scratch.put(buf)
        elif self._streams(r):
            self.sums_to.write_sums(r + 1, levels(self.schedule[r]), self.shape, self.sdtype[r],
                                    tile.r0, tile.c0, [S for _, S in sums],
                                    lambda: self.scratch.put(buf))
        else:
            self.held.setdefault(r, []).append((tile, sums, buf))
