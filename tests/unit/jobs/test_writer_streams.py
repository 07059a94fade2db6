"""The checkpoint writer after a resolution's stream could not begin (a full disk):
the error is reported once, and the jobs queued behind it neither fail with another
error nor make the resolution durable (a job on a full disk reported a KeyError from
its streamed tiles instead of the disk's message, 1 run in 6)."""
import errno

import numpy as np

from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import streamed
from lrmpi.jobs.checkpoint import writer as W


def test_a_stream_that_cannot_begin_is_reported_once_and_never_durable(tmp_path, monkeypatch):
    real = streamed.AtomicH5

    def full_disk(path, *args, **kwargs):
        if kwargs.get("aligned"):  # the streamed resolution file (begin_resolution)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(streamed, "AtomicH5", full_disk)
    w = W.CheckpointWriter(str(tmp_path / "C.h5"), "matmul", {}, fsync=False)
    C = np.ones((4, 4))
    w.begin_resolution(1, C.shape)
    errors, released, durable = [], [], []

    def call(f):
        try:
            f()
        except CheckpointError as exc:
            errors.append(str(exc))

    call(w.flush)  # the stream's error, reported here
    call(lambda: w.write_tile(1, 0, 0, C))
    call(lambda: w.add_resolution(1, {}, {"index": 1}, done=durable.append,
                                  release=lambda: released.append(1), whole=C))
    call(w.flush)
    assert len(errors) == 1 and "No space left on device" in errors[0], errors
    assert released == [1] and durable == []
    assert w.completed == []
    call(w.close)
    assert len(errors) == 1, errors


def _sums_tiles(rng):
    return [(r0, c0, [rng.integers(-99, 99, (4, 3)).astype(np.int32)])
            for r0 in (0, 4) for c0 in (0, 3)]


def test_streamed_level_sums_are_sealed_before_the_resolution(tmp_path):
    import h5py
    from lrmpi.jobs.checkpoint import checksum, schema as S
    from lrmpi.numerics.accumulate import STREAMED
    w = W.CheckpointWriter(str(tmp_path / "C.h5"), "matmul", {}, fsync=False)
    tiles = _sums_tiles(np.random.default_rng(0))
    released, durable = [], []
    for i, (r0, c0, parts) in enumerate(reversed(tiles)):  # any order
        w.write_sums(2, [2], (8, 6), np.int32, r0, c0, parts, lambda i=i: released.append(i))
    C = np.zeros((8, 6))
    w.add_resolution(2, {S.RESULT: C}, {"index": 2}, sums=STREAMED, done=durable.append)
    w.flush()
    assert sorted(released) == [0, 1, 2, 3] and len(durable) == 1
    with h5py.File(S.sums_file(w.path, w.job_id, 2), "r") as f:
        got = f[S.SUMS][()]
        assert checksum.array_digest(got, got.dtype) == f[S.SUMS].attrs[S.CHECKSUM]
    want = np.zeros((1, 8, 6), np.int32)
    for r0, c0, parts in tiles:
        want[0, r0:r0 + 4, c0:c0 + 3] = parts[0]
    np.testing.assert_array_equal(got, want)
    w.close()


def test_level_sums_that_cannot_begin_skip_their_resolution(tmp_path, monkeypatch):
    from lrmpi.jobs.checkpoint import schema as S
    from lrmpi.numerics.accumulate import STREAMED
    real = streamed.AtomicH5

    def full_disk(path, *args, **kwargs):
        if "sums" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(streamed, "AtomicH5", full_disk)
    w = W.CheckpointWriter(str(tmp_path / "C.h5"), "matmul", {}, fsync=False)
    errors, released, durable = [], [], []

    def call(f):
        try:
            f()
        except CheckpointError as exc:
            errors.append(str(exc))

    tiles = _sums_tiles(np.random.default_rng(1))
    r0, c0, parts = tiles[0]
    call(lambda: w.write_sums(2, [2], (8, 6), np.int32, r0, c0, parts,
                              lambda: released.append(0)))
    call(w.flush)  # the sums file's error, reported here
    for i, (r0, c0, parts) in enumerate(tiles[1:], 1):
        call(lambda: w.write_sums(2, [2], (8, 6), np.int32, r0, c0, parts,
                                  lambda i=i: released.append(i)))
    call(lambda: w.add_resolution(2, {S.RESULT: np.zeros((8, 6))}, {"index": 2},
                                  sums=STREAMED, done=durable.append,
                                  release=lambda: released.append("C")))
    call(w.flush)
    assert len(errors) == 1 and "No space left on device" in errors[0], errors
    assert sorted(map(str, released)) == ["0", "1", "2", "3", "C"] and durable == []
    assert w.completed == []
    call(w.close)
    assert len(errors) == 1, errors
