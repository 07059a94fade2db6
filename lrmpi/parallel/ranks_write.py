"""Results written by the ranks that computed them (`--write ranks`), the root's side.

The files are jobs.checkpoint.rank_files'. In this mode the scheduler pins each tile
to one worker, which keeps the tile's exact accumulator, decodes its C and writes it
with the level sums to its own file (tilework.OwnedTiles); a RESULT carries only
max |C tile| (protocol.ResultKind.WRITTEN). When a resolution has every tile, the
root sends each worker SEAL; each commits its file and answers SEALED (file name,
tiles); once all did, the resolution's file is written with C as a virtual dataset
over the rank files, and linked (resolutions.Resolutions.written). The root never
receives or writes C itself, except at the last layered resolution, whose fallback
check reads C back from the rank files (and writes it whole if an entry changed).

Workers answer SEAL in order, so resolutions finish in order (design.md, "Results
written by the ranks"). A worker that could not commit its file answers with tiles
None: that resolution and every later one are never listed (the job is failing: the
worker reported its error), and neither is one whose files do not hold every tile
(a virtual dataset would read the missing ones as fill values). MPI-free: the root's
endpoints (endpoints.MatmulRanks) send SEAL and receive SEALED.
"""
import time

from lrmpi.errors import CheckpointError
from lrmpi.parallel.backoff import Backoff

SEALING_S = 2.0   # how long a failing job waits for the SEALED answers of its last seals
STOP_SEALING_S = 1.0   # ... and a job stopped by its deadline or a signal (a worker
# answers SEAL between tasks: a long task delays it; the deadline's margin covers this)


class RanksWrite:
    """`tiles`: the tiling's tiles; `ranks`: seal(r) and sealed() (MatmulRanks);
    `record`: tile_in(r, tile, done) and written(r, cmax, parts) (Resolutions)."""

    def __init__(self, tiles, ranks, record):
        self.tiles, self.ranks, self.record = tiles, ranks, record
        self.count, self.amax = {}, {}
        self.pending = {}   # resolution -> [workers yet to answer SEALED, parts]
        self.lost = None    # the first resolution that cannot be listed, once one is

    def tile(self, r, tile, amax):
        """A tile of resolution r written by its worker (max |C tile| = amax)."""
        self.count[r] = self.count.get(r, 0) + 1
        self.amax[r] = max(self.amax.get(r, 0.0), amax)
        if not self.record.tile_in(r, tile, self.count[r]) or \
                (self.lost is not None and r >= self.lost):
            return
        self.ranks.seal(r)
        self.pending[r] = [set(self.ranks.workers), []]

    def poll(self):
        """SEALED answers; finishes resolutions every worker sealed. True if any came."""
        got = False
        for worker, (r, name, tiles) in self.ranks.sealed():
            got = True
            if r not in self.pending:   # a resolution given up (self.lost)
                continue
            waiting, parts = self.pending[r]
            waiting.discard(worker)
            if tiles is None:           # that worker could not commit its file of r
                self._lose(r)
            elif name is not None:
                parts.append((name, [(t, *_corners(self.tiles[t])) for t in tiles]))
        while self.pending and not self.pending[min(self.pending)][0]:
            r = min(self.pending)
            _, parts = self.pending.pop(r)
            if {t for _, tiles in parts for t, *_ in tiles} != set(range(len(self.tiles))):
                self._lose(r)
                break
            try:
                self.record.written(r, self.amax.pop(r), sorted(parts))
            except BaseException:   # not listed: nor may a later one be
                self._lose(r)
                raise
        return got

    def settle(self, check_error, seconds=SEALING_S):
        """Every tile is in: if a resolution was lost, the job must not end `complete`.
        The worker that could not commit its file reports its error after its answer
        (check_error() raises it); without one within `seconds`, a CheckpointError."""
        if self.lost is None:
            return
        end, backoff = time.perf_counter() + seconds, Backoff()
        while time.perf_counter() < end:
            check_error()
            backoff.sleep()
        raise CheckpointError(f"resolution {self.lost + 1} could not be listed: a worker "
                              "could not commit its rank file, or the files miss a tile")

    def finish(self, seconds=SEALING_S):
        """The job fails or stops: the resolutions being sealed are still listed if
        every worker answers within `seconds` (a worker answers SEAL after its own
        error too); the others are given up. Never raises: the job's own error, or
        its stop, is the one to tell."""
        end, backoff = time.perf_counter() + seconds, Backoff()
        try:
            while self.pending and time.perf_counter() < end:
                backoff.step(self.poll())
        except BaseException:   # e.g. the disk that failed the job fails the listing too,
            pass                # or a second Ctrl-C: the job's status is recorded next
        if self.pending:
            self._lose(min(self.pending))

    def _lose(self, r):
        """Resolution r cannot be listed, nor any later one (they finish in order)."""
        self.lost = r if self.lost is None else min(self.lost, r)
        for q in [q for q in self.pending if q >= r]:
            del self.pending[q]


def _corners(tile):
    return tile.r0, tile.r1, tile.c0, tile.c1
