"""streamed.SumsStream: a resolution's level sums written tile by tile give the file
resume_data.write_tile_sums writes from whole TileSums (same data, same checksum), in any
tile order, and each tile's buffer comes back as soon as it is written and hashed."""
import h5py
import numpy as np
import pytest

from lrmpi.jobs.checkpoint import checksum, resume_data
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.jobs.checkpoint.atomic import atomic_h5
from lrmpi.jobs.checkpoint.streamed import SumsStream
from lrmpi.numerics.accumulate import TileSums


def _tiles(rng, levels, shape, rows, cols, dtype):
    m, n = shape
    out = []
    for r0, r1 in zip(rows[:-1], rows[1:]):
        for c0, c1 in zip(cols[:-1], cols[1:]):
            out.append((r0, c0, [rng.integers(-2**30, 2**30, (r1 - r0, c1 - c0)).astype(dtype)
                                 for _ in levels]))
    return out


@pytest.mark.parametrize("levels,dtype,rows,cols", [
    ([3], np.int32, [0, 5, 13, 20], [0, 7, 16]),       # a 2-D grid of uneven tiles
    ([2, 3], np.int64, [0, 8, 20], [0, 16]),           # two levels, whole-row tiles
    ([4], np.int32, [0, 20], [0, 16]),                 # one tile
])
def test_streamed_sums_are_the_whole_file(tmp_path, levels, dtype, rows, cols):
    rng = np.random.default_rng(len(levels) + len(rows))
    shape = (20, 16)
    tiles = _tiles(rng, levels, shape, rows, cols, dtype)
    ref = tmp_path / "ref.h5"
    ts = TileSums(levels, shape, np.dtype(dtype), tiles)
    atomic_h5(str(ref), lambda f: resume_data.write_tile_sums(f, 5, ts, "job"),
              False, ts.nbytes, aligned=True)
    out = tmp_path / "streamed.h5"
    s = SumsStream(str(out), "job", 5, levels, shape, dtype, fsync=False)
    released = []
    order = rng.permutation(len(tiles))
    for step, i in enumerate(order):
        r0, c0, parts = tiles[i]
        s.add(r0, c0, parts, lambda i=i: released.append(i))
        if len(levels) == 1:  # a band goes back once it and every band above it are in
            done = {j for j in order[:step + 1]}
            first_missing = min((tiles[j][0] for j in range(len(tiles)) if j not in done),
                                default=shape[0])
            assert set(released) == {j for j in range(len(tiles)) if tiles[j][0] < first_missing}
    s.finish()
    assert sorted(released) == list(range(len(tiles)))
    with h5py.File(ref, "r") as a, h5py.File(out, "r") as b:
        np.testing.assert_array_equal(a[S.SUMS][()], b[S.SUMS][()])
        assert a[S.SUMS].attrs[S.CHECKSUM] == b[S.SUMS].attrs[S.CHECKSUM]
        assert checksum.array_digest(b[S.SUMS][()], b[S.SUMS].dtype) == \
            b[S.SUMS].attrs[S.CHECKSUM]
        assert dict(a.attrs).keys() == dict(b.attrs).keys()
        for k in a.attrs:
            np.testing.assert_array_equal(a.attrs[k], b.attrs[k])


def test_an_incomplete_stream_is_refused_and_its_tiles_come_back(tmp_path):
    shape, levels = (8, 4), [2]
    tiles = _tiles(np.random.default_rng(1), levels, shape, [0, 4, 8], [0, 4], np.int32)
    s = SumsStream(str(tmp_path / "s.h5"), "job", 2, levels, shape, np.int32, fsync=False)
    released = []
    s.add(*tiles[1], lambda: released.append(1))  # rows 4..8: waits for rows 0..4
    assert released == []
    with pytest.raises(Exception, match="incomplete"):
        s.finish()
    assert released == [1] and not (tmp_path / "s.h5").exists()
