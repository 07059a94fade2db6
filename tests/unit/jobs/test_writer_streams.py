"""The checkpoint writer after a resolution's stream could not begin (a full disk):
the error is reported once, and the jobs queued behind it neither fail with another
error nor make the resolution durable (a job on a full disk reported a KeyError from
its streamed tiles instead of the disk's message, 1 run in 6)."""
import errno

import numpy as np

from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import writer as W


def test_a_stream_that_cannot_begin_is_reported_once_and_never_durable(tmp_path, monkeypatch):
    real = W.AtomicH5

    def full_disk(path, *args, **kwargs):
        if kwargs.get("aligned"):  # the streamed resolution file (begin_resolution)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(W, "AtomicH5", full_disk)
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
