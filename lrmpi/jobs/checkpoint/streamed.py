"""What the checkpoint writer writes while a resolution computes, tile by tile, on its
thread: the resolution's C (begin_resolution, write_tile; keep_partial when a stop cuts
it) and its level sums, a matmul's resume data (write_sums, SumsStream).
add_resolution (writer.py) seals both.

The level sums streamed make the file resume_data.write_tile_sums writes from whole
TileSums: the same attributes, dataset and checksum (array_digest of the (levels, m, n) array in C order).
The digest takes a band of rows as soon as every band above it is in (tiles of a band
share r0 and height), so a tile's buffer goes back to the root once it is written and
hashed; with several levels a band waits until the level before is hashed whole. Two
gains (measured at n = 4096, docs/README.md): the root no longer holds a resolution's
sums until its end (64 MiB), and the sums are on disk before the last tile arrives, off
the path to the resolution's durability.
"""
import numpy as np

from lrmpi.digests import Digest
from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import checksum
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.jobs.checkpoint.atomic import AtomicH5, fsync_path
from lrmpi.jobs.checkpoint.direct import DirectRows


class StreamedWrites:
    """CheckpointWriter's streaming calls (a mixin: it reads the writer's path, job_id,
    fsync, streams, sums_streams and _submit)."""

    def begin_resolution(self, index, shape):
        """Open resolution `index`'s file, with a float64 dataset C of `shape`, to
        stream tiles into (write_tile) while the rest is computed; add_resolution
        finishes it."""
        self._submit_data(lambda: self._begin(index, shape))

    def write_tile(self, index, r0, c0, tile):
        """Write a tile of resolution `index`'s C at (r0, c0). `tile` must stay
        unchanged until add_resolution's release() has run."""
        self._submit_data(lambda: self._tile(index, r0, c0, tile))

    def write_sums(self, index, levels, shape, dtype, r0, c0, parts, release):
        """One tile's level sums of resolution `index` (parts[l]: its block of level l),
        streamed into the resolution's sums file (SumsStream); release() runs once
        they are written and hashed, or when they are dropped (a failure, a stop).
        add_resolution(..., sums=STREAMED) then seals the file."""
        def job():  # a failure here skips every later data job (writer._failed)
            if index not in self.sums_streams:
                try:
                    self.sums_streams[index] = SumsStream(
                        S.sums_file(self.path, self.job_id, index), self.job_id, index,
                        levels, shape, dtype, self.fsync)
                except BaseException:
                    release()
                    raise
            try:
                self.sums_streams[index].add(r0, c0, parts, release)
            except BaseException:
                self.sums_streams.pop(index).abort()
                raise
        self._submit_data(job, release)

    def keep_partial(self, index, tiles):
        """Resolution `index` stops part way: what was streamed of it becomes resume
        data (S.partial_file, committed like every file) instead of being dropped;
        `tiles` (t, 4): the r0, r1, c0, c1 of the tiles written."""
        def job():
            stream = self.streams.pop(index, None)
            if stream is None:
                return
            stream.f.attrs[S.JOB_ID] = self.job_id
            stream.f.attrs[S.TILES] = np.asarray(tiles, np.int64).reshape(-1, 4)
            checksum.stamp(stream.f[S.RESULT], stream.f[S.RESULT][()])  # what is on disk (a stop)
            stream.path = S.partial_file(self.path, self.job_id, index)
            stream.commit()
        self._submit_data(job)  # after a failure its tiles may be missing: not kept

    def _begin(self, index, shape):
        path = S.res_file(self.path, self.job_id, index)
        # a stream that cannot begin (a full disk) fails the writer: its tiles and its
        # resolution are then skipped, never written into a file without them
        stream = AtomicH5(path, self.fsync, 8 * shape[0] * shape[1], aligned=True)
        try:
            stream.direct = DirectRows(stream.f, S.RESULT, shape)
        except BaseException:
            stream.abort()
            raise
        self.streams[index] = stream

    def _tile(self, index, r0, c0, tile):
        stream = self.streams[index]
        if stream.direct.put(r0, c0, [tile]):
            return  # around the page cache: on its way to the disk already
        if self.fsync:  # start the disk now, not at the end: durable soon after the last tile
            fsync_path(stream.tmp)


class SumsStream:
    """Resolution `index`'s sums file at `path`: add() each tile's [S per level] (with
    `release()`, called once the tile is written and hashed, or dropped), finish() once
    every tile is in, abort() otherwise."""

    def __init__(self, path, job_id, index, levels, shape, dtype, fsync):
        m, n = (int(v) for v in shape)
        self.shape, self.dtype = (len(levels), m, n), np.dtype(dtype)
        self.file = AtomicH5(path, fsync, int(np.prod(self.shape)) * self.dtype.itemsize,
                             aligned=True)
        try:
            f = self.file.f
            f.attrs[S.RESOLUTION] = index
            f.attrs[S.LEVELS] = list(levels)
            f.attrs[S.JOB_ID] = job_id
            self.file.direct = DirectRows(f, S.SUMS, self.shape, self.dtype)
        except BaseException:
            self.file.abort()
            raise
        self.digest = Digest(f"{self.dtype.str}{self.shape}".encode())
        self.bands = {}             # r0 -> [(c0, parts, release)] not yet hashed whole
        self.level, self.row = 0, 0  # where the digest stands

    def add(self, r0, c0, parts, release):
        """Write one tile (parts[l]: its (h, w) block of level l) and hash what it
        completes. On failure the tile's release() runs before the error propagates."""
        try:
            self.file.direct.put(r0, c0, parts)
        except BaseException:
            release()
            raise
        self.bands.setdefault(r0, []).append((c0, parts, release))
        self._hash()

    def _hash(self):
        L, m, n = self.shape
        while self.level < L:
            band = self.bands.get(self.row)
            if band is None or sum(p[0].shape[1] for _, p, _ in band) != n:
                return
            band.sort(key=lambda t: t[0])
            height = band[0][1][self.level].shape[0]
            for i in range(height):
                for _, parts, _ in band:
                    self.digest.update(
                        np.ascontiguousarray(parts[self.level][i], self.dtype).data.cast("B"))
            if self.level == L - 1:  # every level of these tiles is hashed: back they go
                for _, _, release in self.bands.pop(self.row):
                    release()
            self.row += height
            if self.row >= m:
                self.level, self.row = self.level + 1, 0

    def finish(self):
        """Seal the file with its checksum (every tile must be in) and commit it."""
        if self.level < self.shape[0]:
            self.abort()
            raise CheckpointError(f"{self.file.path}: level sums incomplete (level "
                                  f"{self.level}, row {self.row} of {self.shape})")
        self.file.direct.dataset.attrs[S.CHECKSUM] = self.digest.hexdigest()
        self.file.commit()

    def abort(self):
        """Remove the file; every tile still held goes back."""
        try:
            self.file.abort()
        finally:
            for band in self.bands.values():
                for _, _, release in band:
                    release()
            self.bands = {}
