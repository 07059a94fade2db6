"""The CRT resolution on the root, without MPI: residues on a thread, their blocks for
the tasks, tiles in any order give the one-process CRT product bit for bit."""
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
    while not stage.ready():  # the residues, on a thread
        time.sleep(0.001)
    blocks = RootBlocks(ea, eb, tiling, stage)
    res = plan.layers
    for op, block, l in plan.keys(res, plan.tiles[4]):  # views of the residues
        assert blocks[(op, block, l)].shape == plan.block_shape(op, block)
        whole = stage.ops.RA if op == Operand.RA else stage.ops.RB
        assert np.shares_memory(blocks[(op, block, l)], whole)
    tiles = list(plan.tiles)
    rng.shuffle(tiles)
    for i, tile in enumerate(tiles):
        nlevels, dtype = plan.layout(res)
        _, body = protocol.result_buffers(ScratchPool(), nlevels, tile.shape, dtype)
        values = compute_tile(plan, res, tile, blocks, body, ScratchPool(), lambda: False, 0,
                              stage.setup())
        assert stage.add(tile, values) == i + 1
        np.testing.assert_array_equal(stage.tile_of(tile), values)
    C, cmax = stage.finish()
    want, bound, want_max = crt.crt_matmul(A, B, 7)
    np.testing.assert_array_equal(C, want)
    assert cmax == want_max and crt.bound_abs(stage.ops, cmax) == bound and stage.products == 7
    # the finished tiles' corners: the resolution's resume data
    assert sorted(map(tuple, stage.partial())) == sorted(
        (t.r0, t.r1, t.c0, t.c1) for t in plan.tiles)
