"""A task is computed in column chunks and given up between chunks when a stop waits."""
import numpy as np

from lrmpi import config
from lrmpi.numerics.buffers import ScratchPool
from lrmpi.numerics.layered import level_sums
from lrmpi.parallel import protocol
from lrmpi.parallel.partition import Tiling
from lrmpi.parallel.plan import Plan
from lrmpi.parallel.messages import Operand
from lrmpi.parallel.tilework import HeldPlanes, compute_tile


class StopAfter:
    """should_stop() answers True (a STOP waiting) from its `n`-th call on."""

    def __init__(self, n=None):
        self.calls, self.n = 0, n

    def __call__(self):
        self.calls += 1
        return self.n is not None and self.calls >= self.n


def _task(rng, n=2 * config.get().chunk_cols + 5, k=300, pairs=((1, 2), (2, 1), (2, 2))):
    plan = Plan(7, 2, k, (tuple(pairs),), Tiling(40, n, 1, 1))
    tile = plan.tiles[0]
    blocks = {}
    for p in (1, 2):
        blocks[(Operand.A, 0, p)] = rng.integers(-127, 128, (40, k), dtype=np.int8)
        blocks[(Operand.B, 0, p)] = rng.integers(-127, 128, (n, k), dtype=np.int8)
    nlevels, dtype = plan.layout(0)
    _, body = protocol.result_buffers(ScratchPool(), nlevels, tile.shape, dtype)
    return plan, blocks, tile, list(pairs), body


def test_chunked_task_equals_the_whole_tile(rng):
    plan, blocks, tile, pairs, body = _task(rng)
    got = compute_tile(plan, 0, tile, blocks, body, ScratchPool(), StopAfter(), 1)
    want = level_sums(HeldPlanes(blocks, Operand.A, 0), HeldPlanes(blocks, Operand.B, 0),
                      pairs, 7)
    assert [lv for lv, _ in got] == [lv for lv, _ in want]
    for (_, S), (_, W) in zip(got, want):
        assert S.shape == tile.shape and (S == W).all()


def test_stop_between_chunks_abandons_the_task(rng):
    plan, blocks, tile, pairs, body = _task(rng)
    stop = StopAfter(1)  # a STOP is there after the first chunk
    assert compute_tile(plan, 0, tile, blocks, body, ScratchPool(), stop, 1) is None
    assert stop.calls == 1  # one chunk of three computed, then it stopped
