"""Rank files (`--write ranks`) carry their identity: job id, resolution and rank, the
ones their name says, so an intact file copied over another of the same job is refused
(a checksum cannot see it)."""
import os
import shutil

import h5py
import numpy as np
import pytest

from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import rank_files
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.parallel.partition import Tiling

JOB = "0123456789abcdef"


def written(tmp_path, res, rank):
    """A sealed rank file of resolution res (0-based) by `rank`: its path."""
    out = str(tmp_path / "c.h5")
    os.makedirs(S.job_dir(out, JOB), exist_ok=True)
    files = rank_files.RankFiles((out, JOB, False), rank)
    tile = Tiling(4, 3, 1, 1).tiles()[0]
    C = np.arange(12.0).reshape(4, 3)
    files.put(res, tile, C, [(0, np.arange(12, dtype=np.int64).reshape(4, 3))])
    name, tiles = files.seal(res)
    assert tiles == [tile.index] and name == S.rank_name(res + 1, rank)
    return out, os.path.join(S.job_dir(out, JOB), name), tile


def test_a_rank_file_carries_the_resolution_and_rank_its_name_says(tmp_path):
    out, path, tile = written(tmp_path, 2, 5)
    with h5py.File(path, "r") as f:
        assert S.py(f.attrs[S.JOB_ID]) == JOB
        assert S.py(f.attrs[S.RESOLUTION]) == 3 and S.py(f.attrs[S.RANK]) == 5
        rank_files.check_place(f, path, os.path.basename(path))
    parts = [(os.path.basename(path), [(tile.index, tile.r0, tile.r1, tile.c0, tile.c1)])]
    C = rank_files.read_tiles(out, JOB, parts, (4, 3))
    np.testing.assert_array_equal(C, np.arange(12.0).reshape(4, 3))


@pytest.mark.parametrize("other", ["rank0005-res001.h5", "rank0004-res003.h5"])
def test_a_rank_file_under_another_resolution_or_rank_name_is_refused(tmp_path, other):
    out, path, tile = written(tmp_path, 2, 5)
    moved = os.path.join(os.path.dirname(path), other)
    shutil.copyfile(path, moved)
    with h5py.File(moved, "r") as f, pytest.raises(CheckpointError, match="copied over"):
        rank_files.check_place(f, moved, other)
    parts = [(other, [(tile.index, tile.r0, tile.r1, tile.c0, tile.c1)])]
    with pytest.raises(CheckpointError, match="copied over"):
        rank_files.read_tiles(out, JOB, parts, (4, 3))


def test_a_rank_file_written_before_it_carried_them_still_reads(tmp_path):
    """Older rank files carry only the job id: they read as before."""
    out, path, _ = written(tmp_path, 0, 1)
    with h5py.File(path, "r+") as f:
        del f.attrs[S.RESOLUTION], f.attrs[S.RANK]
        rank_files.check_place(f, path, os.path.basename(path))


def test_rank_rows_read_c_band_by_band_and_whole_on_a_write(tmp_path, monkeypatch):
    """The fallback check's pass over C written by the ranks: C[i0:i1] for rows in any
    blocks gives C's rows, reading one band of tiles at a time (never C whole), from
    two ranks' files on a 2 x 2 tiling; a write or np.asarray reads C whole."""
    out = str(tmp_path / "c.h5")
    os.makedirs(S.job_dir(out, JOB), exist_ok=True)
    C = np.random.default_rng(3).standard_normal((10, 7))
    tiling = Tiling(10, 7, 2, 2)
    parts = []
    for rank, tiles in ((1, tiling.tiles()[:3]), (2, tiling.tiles()[3:])):
        files = rank_files.RankFiles((out, JOB, False), rank)
        for t in tiles:
            files.put(0, t, C[t.r0:t.r1, t.c0:t.c1].copy(), [(0, np.zeros((t.r1 - t.r0,
                                                                        t.c1 - t.c0), np.int64))])
        name, _ = files.seal(0)
        parts.append((name, [(t.index, t.r0, t.r1, t.c0, t.c1) for t in tiles]))
    reads = []
    real = rank_files.read_tiles
    monkeypatch.setattr(rank_files, "read_tiles",
                        lambda *a, **k: reads.append(a[4:] or k.get("rows")) or real(*a, **k))
    rows = rank_files.RankRows(out, JOB, parts, C.shape)
    got = np.concatenate([rows[i:i + 3] for i in range(0, 10, 3)])
    np.testing.assert_array_equal(got, C)
    assert all(r is not None for r in reads) and len(reads) == 2  # one read per band
    assert rows.array is None
    np.testing.assert_array_equal(np.abs(rows), np.abs(C))  # whole, once
    rows[1, 2] = 5.0
    assert rows.array is not None and rows[1, 2] == 5.0 and rows[0:10].shape == (10, 7)


def test_a_tile_that_would_leave_the_disk_without_room_for_the_root_is_refused(
        tmp_path, monkeypatch):
    """A rank's tile is checked against the free space before HDF5 writes it (a write
    failing inside HDF5 left raw HDF5 errors, crashes at exit and, with the disk full,
    a root that could list no resolution nor record the failure): ENOSPC, the file
    untouched, while the space leaves ROOT_ROOM for the root."""
    import errno
    import os as os_module
    from collections import namedtuple
    out = str(tmp_path / "c.h5")
    os.makedirs(S.job_dir(out, JOB), exist_ok=True)
    files = rank_files.RankFiles((out, JOB, False), 1)
    tiles = Tiling(8, 3, 2, 1).tiles()
    C = np.arange(12.0).reshape(4, 3)
    files.put(0, tiles[0], C)
    st = namedtuple("st", "f_bavail f_frsize")
    free = C.nbytes + rank_files.ROOT_ROOM  # short of the HDF5 headroom
    monkeypatch.setattr(os_module, "statvfs", lambda p: st(free, 1))
    with pytest.raises(OSError) as err:
        files.put(0, tiles[1], C)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.setattr(os_module, "statvfs", lambda p: st(free + (1 << 20), 1))
    files.put(0, tiles[1], C)
    name, done = files.seal(0)
    assert done == [tiles[0].index, tiles[1].index]
