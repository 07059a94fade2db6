"""Finished resolutions on the root: their bounds, attributes, the callback and the
checkpoint, however C was assembled (by the root from level sums, by the root from
CRT tiles, or written by the ranks). MPI-free.
"""
from lrmpi.numerics import bounds
from lrmpi.numerics.layered import finish_last


class Resolutions:
    """The record of a layered matmul `lm` (encoded as ea, eb) on the root.

    `bounds`: its numerics.bounds.Bounds; `crt`: the CrtStage, or None; `writer`: the
    checkpoint writer, or None; `on_resolution(meta, C)`: called for each finished
    resolution (C is reused later, None when the ranks wrote it); `progress`: a
    progress.Progress, `figures`: a progress.Figures; `shape`: C's; `ntiles`: tiles a
    resolution has; `clock()`: the job's elapsed seconds.
    """

    def __init__(self, lm, ea, eb, bounds_, *, crt, writer, on_resolution, progress, figures,
                 shape, ntiles, clock):
        self.lm, self.ea, self.eb, self.bounds, self.crt = lm, ea, eb, bounds_, crt
        self.layers = len(lm.schedule)
        self.writer, self.on_resolution = writer, on_resolution
        self.progress, self.figures, self.shape, self.ntiles = progress, figures, shape, ntiles
        self.clock = clock
        self.meta, self.cmax = [], []

    def resumed(self, meta):
        """The attributes of a resolution a checkpoint holds (the job continues after it)."""
        self.meta.append(meta)
        self.cmax.append(float(meta["cmax"]))

    def tile_in(self, r, tile, done, values=None):
        """Tile `done` of resolution r is in; its decoded `values` (when the root holds
        them) are streamed to the disk while the rest computes. True when it was r's
        last."""
        if self.writer is not None and values is not None:
            if done == 1:
                self.writer.begin_resolution(r + 1, self.shape)
            self.writer.write_tile(r + 1, tile.r0, tile.c0, values)
        self.progress.tile(r, done, self.clock())
        return done == self.ntiles

    def layered(self, r, cmax, C):
        """(attributes, rows the fallback changed) of layered resolution r, max |C_r| =
        cmax; at the last layer, entries beyond the planes' reach are recomputed in C
        (numerics/fallback.py; design.md, "Fallback")."""
        self.cmax.append(cmax)
        babs = self.bounds.upto(self.cmax)
        redone = ()
        if r == self.layers - 1:
            redone, babs[-1] = finish_last(self.lm, self.ea, self.eb, self.bounds, C,
                                           self.cmax, babs)
        rel = float(bounds.bound_rel(babs, self.cmax)[-1])
        schedule = self.lm.schedule
        return {"index": r + 1, "pairs": sum(len(x) for x in schedule[:r + 1]),
                "method": "planes", "products": len(schedule[r]),
                "bound_abs": float(babs[r]), "bound_rel": rel, "cmax": self.cmax[-1],
                "fallback": len(redone[0]) if redone else 0, **self._figures(r)}, redone

    def crt_meta(self, r, cmax):
        """The attributes of the CRT resolution r, max |C| = cmax."""
        babs = list(self.bounds.upto(self.cmax)) if self.cmax else []
        b = self.crt.bound(cmax)
        self.cmax.append(cmax)
        return {"index": r + 1, "pairs": sum(len(x) for x in self.lm.schedule),
                "method": "crt", "products": self.crt.products, "bound_abs": b,
                "bound_rel": float(bounds.bound_rel([*babs, b], self.cmax)[-1]),
                "cmax": cmax, "fallback": 0, **self._figures(r)}

    def written(self, r, cmax, parts):
        """Resolution r written by the ranks (`parts`: [(rank file, [(tile, corners)])]):
        C is a virtual dataset over their files; the last layer's fallback check reads
        it back (and writes it whole if an entry changed)."""
        C, datasets = None, {}
        if r == self.layers:
            meta = self.crt_meta(r, cmax)
        else:
            if r == self.layers - 1:  # the fallback check needs C: read it back once
                C = self.writer.read_rank_tiles(parts, self.shape)
            meta, redone = self.layered(r, cmax, C)
            if redone:  # entries changed: C whole in the resolution's file
                datasets = {"C": C}
        self.publish(meta, C, datasets, virtual=None if datasets else (self.shape, parts))

    def _figures(self, r):
        return {"elapsed_s": self.clock(), **self.figures.of(r)}

    def publish(self, meta, C, datasets=None, release=None, **write):
        """A finished resolution: recorded, given to on_resolution, queued for the disk
        (`write`: add_resolution's sums or virtual). `release()` runs once C and the
        buffers are no longer needed (at once without a checkpoint)."""
        self.meta.append(meta)
        if self.on_resolution is not None:
            self.on_resolution(meta, C)
        if self.writer is None:
            self.progress.resolution(meta)
            if release is not None:
                release()
            return
        self.writer.add_resolution(meta["index"], datasets or {}, meta,
                                   done=lambda durable: self.progress.resolution(meta, durable),
                                   release=release, **write)
