"""Finished resolutions on the root: their bounds, attributes, the callback and the
checkpoint, however C was assembled (by the root from level sums, by the root from
CRT tiles, or written by the ranks). MPI-free.
"""
import math

import numpy as np

from lrmpi.numerics import bounds, crt_bound
from lrmpi.numerics.layered import finish_last
from lrmpi.parallel.stages import STAGES

# the product's dataset in a resolution file: jobs/checkpoint/schema.py's RESULT (this
# layer may not import jobs/; tests/unit/parallel/test_resolutions_names.py holds them equal)
RESULT = "C"


class Resolutions:
    """The record of a layered matmul `lm` (encoded as ea, eb) on the root.

    `bounds`: its numerics.bounds.Bounds; `crt`: the CrtStage, or None; `writer`: the
    checkpoint writer, or None; `on_resolution(meta, C)`: called for each finished
    resolution (C is reused later, None when the ranks wrote it); `progress`: a
    progress.Progress, `figures`: a progress.Figures; `shape`: C's; `ntiles`: tiles a
    resolution has; `clock()`: the job's elapsed seconds; `decoded()`: C of the exact
    state after the layers (a resumed job's CRT rule; None where the root holds none).
    """

    def __init__(self, lm, ea, eb, bounds_, *, crt, writer, on_resolution, progress, figures,
                 shape, ntiles, clock, decoded=None):
        self.lm, self.ea, self.eb, self.bounds, self.crt = lm, ea, eb, bounds_, crt
        self.layers = len(lm.schedule)
        self.writer, self.on_resolution = writer, on_resolution
        self.progress, self.figures, self.shape, self.ntiles = progress, figures, shape, ntiles
        self.clock, self.decoded = clock, decoded
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
        with STAGES.timed("bound"):
            babs = self.bounds.upto(self.cmax)
        redone = ()
        if r == self.layers - 1:
            with STAGES.timed("fallback check"):
                redone, babs[-1] = finish_last(self.lm, self.ea, self.eb, self.bounds, C,
                                               self.cmax, babs)
        rel = float(bounds.bound_rel(babs, self.cmax)[-1])
        schedule = self.lm.schedule
        return {"index": r + 1, "pairs": sum(len(x) for x in schedule[:r + 1]),
                "method": "planes", "products": len(schedule[r]),
                "bound_abs": float(babs[r]), "bound_rel": rel, "cmax": self.cmax[-1],
                "fallback": len(redone[0]) if redone else 0, **self._figures(r)}, redone

    def crt_meta(self, r, C, cmax):
        """The CRT resolution r once its C is whole (max |C| = cmax): the fallback and
        the rule that it never replaces a better layered result (crt_bound.finish, C
        changed in place; design.md, "CRT resolution"). Its attributes, and the rows of
        C to write again."""
        # a job file written before it kept bound_abs for every resolution: unknown
        # (inf) for those whose files --keep latest removed; the relative bound still holds
        history = [_known(m.get("bound_abs")) for m in self.meta[:self.layers]]
        b, cmax, redone, method = crt_bound.finish(
            self.lm, self.ea, self.eb, self.crt.ops, C, cmax,
            lambda: self.crt.layers_result(self._layers_again))
        self.crt.drop()
        self.cmax.append(cmax)
        return {"index": r + 1, "pairs": sum(len(x) for x in self.lm.schedule),
                "method": method, "products": self.crt.products, "bound_abs": b,
                "bound_rel": float(bounds.bound_rel([*history, b], self.cmax)[-1]),
                "cmax": cmax, "fallback": len(redone[0]) if redone else 0,
                **self._figures(r)}, rewritten(C, redone, method == "planes")

    def _layers_again(self):
        """(C, bound_abs, max |C|) of the last layered resolution of a resumed job, for
        the CRT rule (crt_bound.finish): decoded again from the exact state after the
        layers, the fallback applied again (the same bits as when it was finished)."""
        C = self.decoded()
        cmax = list(self.cmax[:self.layers])
        # the recorded max |C| is after the fallback; this C is before it, as it was then
        cmax[-1] = max(float(C.max()), -float(C.min()))
        _, babs = finish_last(self.lm, self.ea, self.eb, self.bounds, C, cmax,
                              self.bounds.upto(cmax))
        return C, float(babs), cmax[-1]

    def written(self, r, cmax, parts):
        """Resolution r written by the ranks (`parts`: [(rank file, [(tile, corners)])]):
        C is a virtual dataset over their files; the last layer's fallback check reads
        it back (and writes it whole if an entry changed)."""
        C, datasets = None, {}
        if r == self.layers:  # the fallback and the CRT rule need C: read it back once
            C = self.writer.rank_rows(parts, self.shape).whole()
            meta, changed = self.crt_meta(r, C, cmax)
            if changed:  # entries changed: C whole in the resolution's file
                datasets = {RESULT: C}
        else:
            if r == self.layers - 1:  # the fallback check reads C back, band by band
                C = self.writer.rank_rows(parts, self.shape)
                if self.crt is not None:  # the CRT rule holds it: read whole, once
                    C.whole()
            meta, redone = self.layered(r, cmax, C)
            if redone:  # entries changed: C whole in the resolution's file
                datasets = {RESULT: C.whole()}
            if r == self.layers - 1 and self.crt is not None:  # kept for the CRT rule
                self.crt.hold(C.whole(), meta["bound_abs"], meta["cmax"])
            if C is not None:  # the callback's C: None unless it was read whole
                C = C.array
        self.publish(meta, C, datasets, virtual=None if datasets else (self.shape, parts))

    def _figures(self, r):
        return {"elapsed_s": self.clock(), **self.figures.of(r)}

    def publish(self, meta, C, datasets=None, release=None, **write):
        """A finished resolution: recorded, given to on_resolution, queued for the disk
        (`write`: add_resolution's sums, virtual or whole). `release()` runs once C and the
        buffers are no longer needed (at once without a checkpoint)."""
        self.meta.append(meta)
        if self.on_resolution is not None:
            self.on_resolution(meta, _read_only(C))
        if self.writer is None:
            self.progress.resolution(meta)
            if release is not None:
                release()
            return
        self.writer.add_resolution(meta["index"], datasets or {}, meta,
                                   done=lambda durable: self.progress.resolution(meta, durable),
                                   release=release, **write)


def rewritten(C, redone, whole=False):
    """The rows of C to write again after they were streamed: those the fallback
    changed (`redone`), or all of them."""
    if whole:
        return {RESULT: [(np.s_[:], C)]}
    return {RESULT: [(int(i), C[i]) for i in np.unique(redone[0])]} if redone else {}


def _read_only(C):
    """C for a callback: a view it cannot write (C is reused, and resolution 1's is
    read again after the callback: Assembly.settle)."""
    if isinstance(C, np.ndarray):
        C = C.view()
        C.flags.writeable = False
    return C


def _known(b):
    """A resolution's bound_abs, inf where the job file did not keep it (NaN, absent)."""
    b = math.inf if b is None else float(b)
    return math.inf if math.isnan(b) else b
