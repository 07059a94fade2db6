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
written by the ranks"). MPI-free: the root's
endpoints (endpoints.MatmulRanks) send SEAL and receive SEALED.
"""


class RanksWrite:
    """`tiles`: the tiling's tiles; `ranks`: seal(r) and sealed() (MatmulRanks);
    `record`: tile_in(r, tile, done) and written(r, cmax, parts) (Resolutions)."""

    def __init__(self, tiles, ranks, record):
        self.tiles, self.ranks, self.record = tiles, ranks, record
        self.count, self.amax = {}, {}
        self.pending = {}   # resolution -> [workers yet to answer SEALED, parts]

    def tile(self, r, tile, amax):
        """A tile of resolution r written by its worker (max |C tile| = amax)."""
        self.count[r] = self.count.get(r, 0) + 1
        self.amax[r] = max(self.amax.get(r, 0.0), amax)
        if not self.record.tile_in(r, tile, self.count[r]):
            return
        self.ranks.seal(r)
        self.pending[r] = [set(self.ranks.workers), []]

    def poll(self):
        """SEALED answers; finishes resolutions every worker sealed. True if any came."""
        got = False
        for worker, (r, name, tiles) in self.ranks.sealed():
            waiting, parts = self.pending[r]
            waiting.discard(worker)
            if name is not None:
                parts.append((name, [(t, *_corners(self.tiles[t])) for t in tiles]))
            got = True
        while self.pending and not self.pending[min(self.pending)][0]:
            r = min(self.pending)
            self.record.written(r, self.amax.pop(r), sorted(self.pending.pop(r)[1]))
        return got


def _corners(tile):
    return tile.r0, tile.r1, tile.c0, tile.c1
