"""Results written by the ranks that computed them (`--write ranks`): one file per
rank and resolution, bound into the resolution's file by a virtual dataset.

Each rank writes its tiles of resolution r (C and the exact level sums, the resume
data) into OUT.h5.d/<job_id>/rank<w>-res<r>.h5 under a temporary name; when the
root says r is complete (SEAL) the rank fsyncs and renames it (crash-safe as every
file here) and answers. Only once every rank answered does the root write res<r>.h5,
whose C maps each tile to its rank file, and link it: a SIGKILL of any rank before
leaves r unlisted, never listed but unreadable. A tile's C and level sums are
written around the page cache (direct.py) as the root's files are: a worker's fresh
page-cache pages cost it the CPU its kernels need.
"""
import os

import h5py
import numpy as np

from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import checksum, owned
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.jobs.checkpoint.atomic import AtomicH5, check_space
from lrmpi.jobs.checkpoint.direct import DirectRows


ROOT_ROOM = 256 << 10  # bytes a rank's file leaves free for the root's (see put)


class RankFiles:
    """A worker's files of one job: `write` is Job.write (checkpoint path, job id,
    fsync: the job's --no-fsync holds for these files too)."""

    def __init__(self, write, rank):
        self.path, self.job_id, self.fsync = write
        self.rank = rank
        self.open = {}   # resolution (0-based) -> (AtomicH5, [tile indices])

    def put(self, res, tile, C, sums=None):
        """Tile `tile` of resolution res: its C and (layered) its level sums
        [(level, S)], written as they are (no stacked copy)."""
        if res not in self.open:
            f = AtomicH5(S.rank_file(self.path, self.job_id, res + 1, self.rank), self.fsync,
                         aligned=True)
            f.f.attrs[S.JOB_ID] = self.job_id
            f.f.attrs[S.RESOLUTION] = res + 1  # its identity: a reader checks both
            f.f.attrs[S.RANK] = self.rank
            self.open[res] = (f, [])
        f, tiles = self.open[res]
        # ENOSPC before HDF5 sees a full disk (atomic.check_space), leaving the room the
        # root needs to list the resolutions already sealed and to record the failure
        # (several ranks check at once: each leaves more than its own headroom)
        check_space(f.path, C.nbytes + sum(s.nbytes for _, s in sums or ()) + ROOT_ROOM)
        d = _rows(f.f, S.tile_c(tile.index), C.shape, np.float64, [C])
        d.attrs[S.CHECKSUM] = checksum.array_digest(C, d.dtype)
        if sums is not None:
            shape, dtype = (len(sums), *C.shape), sums[0][1].dtype
            d = _rows(f.f, S.tile_sums(tile.index), shape, dtype, [s for _, s in sums])
            d.attrs[S.LEVELS] = [lv for lv, _ in sums]
            d.attrs[S.CORNER] = (tile.r0, tile.c0)  # where the tile sits in C
            d.attrs[S.CHECKSUM] = checksum.tiled_digest(shape, dtype,
                                                        [(0, 0, [s for _, s in sums])])
        tiles.append(tile.index)

    def seal(self, res):
        """Commit resolution res's file (fsync, rename): (file name, tiles), or
        (None, []) if this rank computed no tile of it."""
        f, tiles = self.open.pop(res, (None, []))
        if f is None:
            return None, []
        f.commit()
        return os.path.basename(f.path), tiles

    def abort(self):
        """The job stops: files never sealed are removed."""
        for f, _ in self.open.values():
            f.abort()
        self.open = {}


def _rows(f, name, shape, dtype, blocks):
    """Dataset `name` of `shape` (..., h, w) in `f` from its (h, w) `blocks` in order
    (direct.DirectRows.put: around the page cache)."""
    direct = DirectRows(f, name, shape, dtype)
    try:
        direct.put(0, 0, blocks)
    finally:
        direct.close()
    return direct.dataset


def virtual_c(f, shape, parts):
    """C as a virtual dataset over the rank files (relative names: HDF5 looks for them
    beside this file, so the folder can be moved); the files' names in RANK_FILES
    (readers check they exist: a missing source would read as fill values)."""
    layout = h5py.VirtualLayout(shape, np.float64)
    for name, tiles in parts:
        for t, r0, r1, c0, c1 in tiles:
            layout[r0:r1, c0:c1] = h5py.VirtualSource(f"./{name}", S.tile_c(t),
                                                      shape=(r1 - r0, c1 - c0))
    f.create_virtual_dataset(S.RESULT, layout, fillvalue=np.nan)
    f.attrs[S.RANK_FILES] = [name for name, _ in parts]


def read_tiles(path, job_id, parts, shape, rows=None):
    """C of `shape` from committed rank files `parts` = [(file name, [(tile, r0, r1, c0,
    c1)])] of job `job_id` at checkpoint `path`, each of this job and checked. `rows`:
    (i0, i1), only the tiles of those rows, into an (i1 - i0, n) array (tiles partly
    inside are read whole: a tile's checksum is over all of it)."""
    i0, i1 = rows if rows is not None else (0, shape[0])
    C = np.empty((i1 - i0, shape[1]))
    for name, tiles in parts:
        tiles = [t for t in tiles if t[1] < i1 and t[2] > i0]
        if not tiles:
            continue
        rank_path = owned.own_file(path, job_id, name)
        with h5py.File(rank_path, "r") as f:
            checksum.verify(f, rank_path, required=True)
            if S.py(f.attrs.get(S.JOB_ID)) != job_id:
                raise CheckpointError(f"{rank_path} belongs to another job than {path}")
            check_place(f, rank_path, name)
            for t, r0, r1, c0, c1 in tiles:
                a, b = max(r0, i0), min(r1, i1)
                C[a - i0:b - i0, c0:c1] = checksum.read(f[S.tile_c(t)], rank_path)[a - r0:b - r0]
    return C


class RankRows:
    """C of `shape` over committed rank files (as read_tiles), read one band of tiles at
    a time for a pass over its rows (the fallback check: C[i0:i1] for i0 rising), so
    C never lies whole in the root's memory (n = 4096: 128 MB of a 298 MB peak); a
    write, or C wanted as an array (np.asarray), reads it whole first (`array`)."""

    def __init__(self, path, job_id, parts, shape):
        self.path, self.job_id, self.parts, self.shape = path, job_id, parts, tuple(shape)
        self.ndim, self.dtype = 2, np.dtype(np.float64)
        self.bands = sorted({(r0, r1) for _, tiles in parts for _, r0, r1, _, _ in tiles})
        self.band, self.array = None, None   # (r0, r1, rows) read last; C whole once read

    def whole(self):
        if self.array is None:
            self.array = read_tiles(self.path, self.job_id, self.parts, self.shape)
            self.band = None
        return self.array

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.whole(), dtype)

    def __setitem__(self, key, value):
        self.whole()[key] = value

    def __getitem__(self, key):
        if self.array is not None or not isinstance(key, slice) or key.step not in (None, 1):
            return self.whole()[key]
        i0, i1, _ = key.indices(self.shape[0])
        out = np.empty((max(0, i1 - i0), self.shape[1]))
        for r0, r1 in self.bands:
            a, b = max(r0, i0), min(r1, i1)
            if a >= b:
                continue
            if self.band is None or self.band[:2] != (r0, r1):
                self.band = (r0, r1, read_tiles(self.path, self.job_id, self.parts,
                                                self.shape, (r0, r1)))
            out[a - i0:b - i0] = self.band[2][a - r0:b - r0]
        return out


def check_place(f, where, name):
    """A rank file (open h5py File `f` named `name`) must hold the resolution and rank
    its name says: a checksum cannot see an intact file of the same job copied over
    another's. Files written before rank files carried them pass (their job id is
    checked by the caller)."""
    m = S.RANK_NAME_RE.fullmatch(name)
    if m is None:
        raise CheckpointError(f"{where} is not a rank file of lrmpi's")
    for key, want in ((S.RESOLUTION, int(m[2])), (S.RANK, int(m[1]))):
        got = f.attrs.get(key)
        if got is not None and not (isinstance(S.py(got), int) and S.py(got) == want):
            raise CheckpointError(f"{where} holds {key} {S.py(got)!r}, not {want} (rank files "
                                  "copied over each other or renamed)")
