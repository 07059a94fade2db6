"""Results written by the ranks that computed them (`--write ranks`), the root's side.

MPI point to point only; the files are jobs.checkpoint.rank_files'. In this mode
the scheduler pins each tile to one worker, which keeps the tile's exact
accumulator, decodes its C and writes it with the level sums to its own file; a
RESULT carries only max |C tile| (protocol.Written). When a resolution has every
tile, the root sends each worker SEAL; each commits its file and answers SEALED
(file name, tiles); once all did, the root writes the resolution's file with C as a
virtual dataset over the rank files, and links it. The root never receives or
writes C itself, except at the last layered resolution, whose fallback check
(numerics/fallback.py) reads C back from the rank files (and writes it whole if an
entry changed).

Workers answer SEAL in order, so resolutions finish in order.
"""
import numpy as np

from lrmpi.numerics.layered import finish_last
from lrmpi.parallel.comm import mpi
from lrmpi.parallel.protocol import Tag


class RanksWrite:
    def __init__(self, root):
        self.root = root
        self.count, self.amax = {}, {}
        self.pending = {}   # resolution -> [workers yet to answer SEALED, parts]
        self.status = None

    def tile(self, r, tile, amax, buf):
        """A tile of resolution r written by its worker (max |C tile| = amax)."""
        root = self.root
        root.assembly.scratch.put(buf)
        self.count[r] = self.count.get(r, 0) + 1
        self.amax[r] = max(self.amax.get(r, 0.0), amax)
        root.progress.tile(r, self.count[r], root.elapsed())
        if self.count[r] < len(root.tiles):
            return
        msg = np.array([r], np.int64)
        for w in root.workers:
            root.mpi.sends.append(root.comm.Isend(msg, dest=w, tag=Tag.SEAL))
        self.pending[r] = [set(root.workers), []]
        root.advance(r)

    def poll(self):
        """SEALED answers; finishes resolutions every worker sealed. True if any came."""
        root, MPI = self.root, mpi()
        status = self.status = self.status or MPI.Status()
        got = False
        while root.comm.iprobe(source=MPI.ANY_SOURCE, tag=Tag.SEALED, status=status):
            r, name, tiles = root.comm.recv(source=status.Get_source(), tag=Tag.SEALED)
            waiting, parts = self.pending[r]
            waiting.discard(status.Get_source())
            if name is not None:
                parts.append((name, [(t, *_corners(root.tiles[t])) for t in tiles]))
            got = True
        while self.pending and not self.pending[min(self.pending)][0]:
            r = min(self.pending)
            self._finish(r, sorted(self.pending.pop(r)[1]))
        return got

    def drain(self):
        """After the workers said BYE: SEALED answers of resolutions the job no longer
        finishes (stopped), received so that no later job on this communicator
        mistakes them for its own. Their files stay unlisted."""
        root, MPI = self.root, mpi()
        while root.comm.iprobe(source=MPI.ANY_SOURCE, tag=Tag.SEALED):
            root.comm.recv(source=MPI.ANY_SOURCE, tag=Tag.SEALED)
        self.pending = {}

    def _finish(self, r, parts):
        root = self.root
        cmax, C, datasets = self.amax.pop(r), None, {}
        if r == root.layers:  # the fallback and the CRT rule need C: read it back once
            C = root.writer.read_rank_tiles(parts, root.assembly.shape)
            meta, changed = root.crt_meta(r, C, cmax)
            if changed:  # entries changed: C whole in the resolution's file
                datasets = {"C": C}
        else:
            root.cmax.append(cmax)
            babs = root.bounds.upto(root.cmax)
            redone = ()
            if r == root.layers - 1:  # the fallback check needs C: read it back once
                C = root.writer.read_rank_tiles(parts, root.assembly.shape)
                redone, babs[-1] = finish_last(root.lm, root.ea, root.eb, root.bounds, C,
                                               root.cmax, babs)
                if redone:  # entries changed: C whole in the resolution's file
                    datasets = {"C": C}
                if root.crt is not None:  # kept for the CRT rule
                    root.crt.hold(C, float(babs[-1]), root.cmax[-1])
            meta = root.resolution_meta(r, babs, redone)
        # C is None unless read back: it is in the ranks' files
        root.publish(meta, C, datasets,
                     virtual=None if datasets else (root.assembly.shape, parts))


def _corners(tile):
    return tile.r0, tile.r1, tile.c0, tile.c1

