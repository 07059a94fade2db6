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
