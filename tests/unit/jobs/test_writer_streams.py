"""The checkpoint writer after a resolution's stream could not begin (a full disk):
the error is reported once, and the jobs queued behind it neither fail with another
error nor make the resolution durable (a job on a full disk reported a KeyError from
its streamed tiles instead of the disk's message, 1 run in 6)."""
import errno

import numpy as np
import pytest

from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import streamed
from lrmpi.jobs.checkpoint import writer as W


def _collecting(errors):
    """call(f): f(), its CheckpointError's line appended to `errors`."""
    def call(f):
        try:
            f()
        except CheckpointError as exc:
            errors.append(str(exc))
    return call


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
    call = _collecting(errors)

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
    call = _collecting(errors)

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


def _drain(w):
    import time
    while w._queue.unfinished_tasks:
        time.sleep(0.005)


def _reported(w):
    try:
        w.check()
    except CheckpointError as exc:
        return str(exc)
    return None


def test_after_a_failure_no_later_resolution_is_linked(tmp_path, monkeypatch):
    """Resolution 1's sums file fails once (EIO, a quota); the root reports it and fails,
    while its collector still hands over resolution 2: 2 must not be linked after a
    skipped 1 (the job file would list a resolution without the ones before it, and
    the whole checkpoint would read as inconsistent)."""
    import os
    from lrmpi.jobs.checkpoint import Checkpoint
    from lrmpi.numerics.accumulate import STREAMED
    real, fails = streamed.AtomicH5, [1]

    def flaky(path, *args, **kwargs):
        if "sums" in os.path.basename(path) and fails:
            fails.pop()
            raise OSError(errno.EIO, "Input/output error", path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(streamed, "AtomicH5", flaky)
    w = W.CheckpointWriter(str(tmp_path / "C.h5"), "matmul", {}, fsync=False)
    released = []

    def resolution(i):
        C = np.full((4, 4), float(i))
        w.write_sums(i, [i], (4, 4), np.int32, 0, 0, [np.ones((4, 4), np.int32)],
                     lambda: released.append(("sums", i)))
        w.begin_resolution(i, C.shape)
        w.write_tile(i, 0, 0, C)
        w.add_resolution(i, {}, {"index": i}, sums=STREAMED, whole=C,
                         release=lambda: released.append(("C", i)))

    resolution(1)
    _drain(w)
    assert "Input/output error" in _reported(w)
    resolution(2)
    w.set_status("failed", "the disk")
    w.close()
    assert w.completed == []
    assert sorted(released) == [("C", 1), ("C", 2), ("sums", 1), ("sums", 2)]
    assert Checkpoint(w.path).completed == 0  # readable, and holds no resolution
    left = [f for _, _, fs in os.walk(tmp_path) for f in fs if ".tmp" in f]
    assert left == []  # every begun file was removed


def test_a_tile_that_fails_keeps_its_resolution_unlinked(tmp_path, monkeypatch):
    """A streamed tile's write fails (ENOSPC from pwrite or h5py): the resolution is never
    linked with a hole (its checksum is the whole C's), nor counted durable."""
    real = streamed.StreamedWrites._tile

    def tile(self, index, r0, c0, t):
        if r0 == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, index, r0, c0, t)

    monkeypatch.setattr(streamed.StreamedWrites, "_tile", tile)
    w = W.CheckpointWriter(str(tmp_path / "C.h5"), "matmul", {}, fsync=False)
    C = np.arange(32.).reshape(8, 4)
    w.begin_resolution(1, C.shape)
    w.write_tile(1, 0, 0, C[:4])
    _drain(w)
    assert "No space left" in _reported(w)
    w.write_tile(1, 4, 0, C[4:])   # queued by the collector meanwhile
    durable = []
    w.add_resolution(1, {}, {"index": 1}, done=durable.append, whole=C)
    w.set_status("failed", "the disk")
    w.close()
    assert durable == [] and w.completed == []


def test_a_full_disk_in_the_root_s_order_gives_the_disk_s_message(tmp_path, monkeypatch):
    """The root's order for a resolution's first tile: its sums, its C file, the tile. On
    a full disk the sums fail first; what the root sees afterwards (set_status on its
    way out) is the disk's message, never a KeyError of a stream that never began."""
    from lrmpi.jobs.checkpoint import atomic
    w = W.CheckpointWriter(str(tmp_path / "C.h5"), "matmul", {}, fsync=False)
    w.flush()

    def full(path, nbytes):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(atomic, "check_space", full)
    C = np.ones((4, 4))
    w.write_sums(1, [2], (4, 4), np.int32, 0, 0, [np.ones((4, 4), np.int32)], lambda: None)
    w.begin_resolution(1, C.shape)
    _drain(w)
    assert "No space left" in _reported(w)
    w.write_tile(1, 0, 0, C)
    for call in (lambda: w.set_status("failed", "x"), w.close):
        try:
            call()
        except CheckpointError as exc:
            assert "No space left" in str(exc), exc


def test_the_last_resolution_failing_never_leaves_complete_or_running(tmp_path, monkeypatch):
    """An inference job's last resolution fails on the writer's thread (its state file:
    a full disk): set_status("complete") then raises the disk's error without writing
    complete, and the job's own failure mark still reaches the job file."""
    import h5py
    from lrmpi.jobs.checkpoint import resume_data, schema as S
    w = W.CheckpointWriter(str(tmp_path / "I.h5"), "infer", {}, fsync=False)
    state = {"scores": np.zeros(3), "next": 2}
    w.add_resolution(1, {"scores": np.zeros(3)}, {"index": 1}, state=dict(state))
    w.flush()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resume_data, "write_state", full)
    w.add_resolution(2, {"scores": np.ones(3)}, {"index": 2}, state=dict(state))
    with pytest.raises(CheckpointError, match="No space left"):
        w.set_status("complete")
    with h5py.File(w.path, "r") as f:  # never complete without its last resolution
        assert S.py(f.attrs[S.STATUS]) == "running"
    w.set_status("failed", "CheckpointError: No space left on device")
    w.close()
    with h5py.File(w.path, "r") as f:
        assert S.py(f.attrs[S.STATUS]) == "failed" and int(f.attrs[S.COMPLETED]) == 1


def test_a_closed_writer_refuses_and_gives_buffers_back(tmp_path):
    w = W.CheckpointWriter(str(tmp_path / "C.h5"), "matmul", {}, fsync=False)
    w.close()
    released = []
    with pytest.raises(CheckpointError, match="closed"):
        w.add_resolution(1, {"C": np.zeros((2, 2))}, {"index": 1},
                         release=lambda: released.append(1))
    with pytest.raises(CheckpointError, match="closed"):
        w.write_sums(1, [1], (2, 2), np.int32, 0, 0, [np.zeros((2, 2), np.int32)],
                     lambda: released.append(2))
    assert released == [1, 2]
