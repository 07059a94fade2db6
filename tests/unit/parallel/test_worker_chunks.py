"""A worker computes a task in column chunks and gives up between chunks on STOP."""
import numpy as np

from lrmpi import config
from lrmpi.numerics.buffers import ScratchPool
from lrmpi.numerics.layered import level_sums, sum_dtype
from lrmpi.parallel import protocol, worker
from lrmpi.parallel.partition import Tiling
from lrmpi.parallel.protocol import Operand


class FakeComm:
    """Iprobe answers True (STOP waiting) from its `stop_after`-th call on."""

    def __init__(self, stop_after=None):
        self.calls, self.stop_after = 0, stop_after

    def Iprobe(self, source=None, tag=None):
        self.calls += 1
        return self.stop_after is not None and self.calls >= self.stop_after


def _task(rng, n=2 * config.get().chunk_cols + 5, k=300, pairs=((1, 2), (2, 1), (2, 2))):
    tiling = Tiling(40, n, 1, 1)
    tile = tiling.tiles()[0]
    planes = {}
    for p in (1, 2):
        planes[(Operand.A, 0, p)] = rng.integers(-127, 128, (40, k), dtype=np.int8)
        planes[(Operand.B, 0, p)] = rng.integers(-127, 128, (n, k), dtype=np.int8)
    dtype = sum_dtype(list(pairs), k, 7)
    nl = len({p + q - 1 for p, q in pairs})
    buf = np.empty(protocol.result_size(nl, tile.shape, dtype), np.int64)
    return planes, tile, list(pairs), protocol.result_body(buf, nl, tile.shape, dtype)


def test_chunked_task_equals_the_whole_tile(rng):
    planes, tile, pairs, body = _task(rng)
    got = worker.compute(FakeComm(), 1, planes, tile, pairs, 7, body, ScratchPool())
    want = level_sums(worker.HeldPlanes(planes, Operand.A, 0),
                      worker.HeldPlanes(planes, Operand.B, 0), pairs, 7)
    assert [lv for lv, _ in got] == [lv for lv, _ in want]
    for (_, S), (_, W) in zip(got, want):
        assert S.shape == tile.shape and (S == W).all()


def test_stop_between_chunks_abandons_the_task(rng):
    planes, tile, pairs, body = _task(rng)
    comm = FakeComm(stop_after=1)  # STOP is there after the first chunk
    assert worker.compute(comm, 1, planes, tile, pairs, 7, body, ScratchPool()) is None
    assert comm.calls == 1  # one chunk of three computed, then it stopped
