"""The CRT resolution on the root, without MPI: its scaling on a thread, the float64
blocks of the tasks (their residues taken where the task runs), tiles in any order
give the one-process CRT product bit for bit."""
import time

import numpy as np

from lrmpi import LayeredMatmul
from lrmpi.numerics import crt
from lrmpi.numerics.buffers import BufferPool, ScratchPool
from lrmpi.parallel import protocol
from lrmpi.parallel.crt_stage import CrtStage
from lrmpi.parallel.messages import Operand
from lrmpi.parallel.partition import Tiling
from lrmpi.parallel.plan import Plan
from lrmpi.parallel.tilework import RootBlocks, compute_tile


def test_tiles_of_the_crt_resolution_give_the_crt_product(rng):
    A = rng.standard_normal((70, 50)) * np.exp(rng.uniform(-8, 8, (70, 1)))
    B = rng.standard_normal((50, 90))
    lm = LayeredMatmul(A, B, planes=2, final="crt", moduli=7)
    ea, eb = lm.encode()
    tiling = Tiling(70, 90, 2, 3)
    plan = Plan(lm.bits, lm.planes, 50, tuple(lm.schedule), tiling, lm.moduli)
    stage = CrtStage(lm, tiling, BufferPool((70, 90), np.float64, 1))
    assert not stage.ready()
    stage.start()
    while not stage.ready():  # the scaling, on a thread
        time.sleep(0.001)
    assert stage.ops.RA is None and stage.ops.RB is None  # no residues on the root
    blocks = RootBlocks(ea, eb, tiling, stage)
    res = plan.layers
    for op, block, l in plan.keys(res, plan.tiles[4]):  # A's rows (a view), B's columns
        got = blocks[(op, block, l)]
        assert got.shape == plan.block_shape(op, block) and got.dtype == plan.block_dtype(op)
        t = plan.tiles[4]
        np.testing.assert_array_equal(got, A[t.r0:t.r1] if op == Operand.AF else B[:, t.c0:t.c1])
        assert op == Operand.BF or np.shares_memory(got, lm.A)
    tiles = list(plan.tiles)
    rng.shuffle(tiles)
    for i, tile in enumerate(tiles):
        nlevels, dtype = plan.layout(res)
        _, body = protocol.result_buffers(ScratchPool(), nlevels, tile.shape, dtype)
        values = compute_tile(plan, res, tile, blocks, body, ScratchPool(), lambda: False, 0,
                              stage.work)
        assert stage.add(tile, values) == i + 1
        np.testing.assert_array_equal(stage.tile_of(tile), values)
    C, cmax = stage.finish()
    want, bound, want_max = crt.crt_matmul(A, B, 7)
    np.testing.assert_array_equal(C, want)
    assert cmax == want_max and crt.bound_abs(stage.ops, cmax) == bound and stage.products == 7
    # the finished tiles' corners: the resolution's resume data
    assert sorted(map(tuple, stage.partial())) == sorted(
        (t.r0, t.r1, t.c0, t.c1) for t in plan.tiles)
