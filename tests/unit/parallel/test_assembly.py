"""The root's assembly of C from its tiles' exact level sums, without MPI: any tile
order gives each resolution of one process bit for bit; resume data and resume."""
import numpy as np
import pytest

from lrmpi import LayeredMatmul
from lrmpi.numerics.buffers import ScratchPool
from lrmpi.parallel import protocol
from lrmpi.parallel.assembly import Assembly
from lrmpi.parallel.partition import Tiling
from lrmpi.parallel.plan import Plan
from lrmpi.parallel.tilework import RootBlocks, compute_tile


def setup(rng, order="antidiagonal", keep_sums=False, m=90, k=40, n=30):
    A = rng.standard_normal((m, k)) * np.exp(rng.uniform(-6, 6, (m, 1)))
    B = rng.standard_normal((k, n))
    lm = LayeredMatmul(A, B, planes=3, order=order)
    ea, eb = lm.encode()
    plan = Plan(lm.bits, lm.planes, k, tuple(lm.schedule), Tiling(m, n, 3, 2))
    sdtype = [plan.layout(r)[1] for r in range(plan.nres)]
    asm = Assembly(ea, eb, plan.schedule, sdtype, keep_sums=keep_sums)
    blocks = RootBlocks(ea, eb, plan.tiling)
    return lm, plan, asm, blocks


def result(plan, asm, blocks, r, tile):
    """(level sums of task (r, tile), the result buffer they live in)."""
    nlevels, dtype = plan.layout(r)
    buf, body = protocol.result_buffers(asm.scratch, nlevels, tile.shape, dtype)
    return compute_tile(plan, r, tile, blocks, body, ScratchPool(), lambda: False, 0), buf


@pytest.mark.parametrize("order", ["antidiagonal", "pairwise", "lshape"])
def test_tiles_in_any_order_give_each_resolution_exactly(rng, order):
    lm, plan, asm, blocks = setup(rng, order)
    asm.start(0)
    ref = list(LayeredMatmul(lm.A, lm.B, planes=3, order=order))
    for r in range(plan.layers):
        tiles = list(plan.tiles)
        rng.shuffle(tiles)
        for i, tile in enumerate(tiles):
            sums, buf = result(plan, asm, blocks, r, tile)
            assert asm.add(r, tile, sums, buf) == i + 1
            np.testing.assert_array_equal(asm.tile_of(r, tile),
                                          ref[r].C[tile.r0:tile.r1, tile.c0:tile.c1])
        C, cmax = asm.finish(r)
        np.testing.assert_array_equal(C, ref[r].C)
        assert cmax == np.abs(ref[r].C).max()
        if r == 0:  # resolution 1's sums into the limbs (from C_1 when it settles)
            asm.settle(C)
        asm.release(C)


def test_resume_data_added_again_continues_bit_identically(rng):
    """A checkpoint keeps each resolution's level sums (resume data); a new assembly
    that adds them again continues exactly where the first one stopped."""
    lm, plan, asm, blocks = setup(rng, keep_sums=True)
    asm.start(0)
    kept = {}
    for r in range(2):
        for tile in plan.tiles:
            asm.add(r, tile, *result(plan, asm, blocks, r, tile))
        C, _ = asm.finish(r)
        if r == 0:
            asm.settle(C)
        ts, bufs = asm.resume_data(r)
        if r == 0 and asm.c1_is_sums:  # resolution 1 is its own resume data: from C
            kept[1] = asm.sums_from_c(C)
        else:
            full = np.zeros((len(ts.levels), *ts.shape), ts.dtype)
            for r0, c0, S in ts.tiles:
                for i, s in enumerate(S):
                    full[i, r0:r0 + s.shape[0], c0:c0 + s.shape[1]] = s
            kept[r + 1] = list(zip(ts.levels, full))
        asm.release(C, bufs)
    again = Assembly(*asm_inputs(lm, plan), keep_sums=False)  # a resumed root's
    again.resume(2, lambda i: kept[i])
    again.start(2)
    ref = list(LayeredMatmul(lm.A, lm.B, planes=3))
    for tile in plan.tiles:
        again.add(2, tile, *result(plan, again, blocks, 2, tile))
    np.testing.assert_array_equal(again.finish(2)[0], ref[2].C)


def asm_inputs(lm, plan):
    ea, eb = lm.encode()
    return ea, eb, plan.schedule, [plan.layout(r)[1] for r in range(plan.nres)]


@pytest.mark.parametrize("keep_sums", [False, True])
def test_resolution_1_s_sums_are_given_back_at_once_when_c_1_holds_them(rng, keep_sums):
    """A fresh run's resolution 1 decodes exactly from its sums (C_1 is its own resume
    data): its result buffers go back as each tile is decoded, and the limbs take the
    sums from C_1 once it is published (settle); resolution 2 is exact after it."""
    lm, plan, asm, blocks = setup(rng, keep_sums=keep_sums, m=600, k=40, n=300)
    asm.start(0)
    assert asm.c1_is_sums
    ref = list(LayeredMatmul(lm.A, lm.B, planes=3))
    for tile in plan.tiles:
        sums, buf = result(plan, asm, blocks, 0, tile)
        asm.add(0, tile, sums, buf)
        # the buffer is free again (the next get of its shape returns it)
        again = asm.scratch.get(buf.shape, buf.dtype)
        assert again is buf
        asm.scratch.put(again)
    C, _ = asm.finish(0)
    np.testing.assert_array_equal(C, ref[0].C)
    if keep_sums:  # the checkpoint writes C_1 alone (no level sums, no buffers)
        assert asm.resume_data(0) == (None, [])
    asm.settle(C)
    asm.release(C)
    for r in (1, 2):
        for tile in plan.tiles:
            asm.add(r, tile, *result(plan, asm, blocks, r, tile))
        C2, _ = asm.finish(r)
        np.testing.assert_array_equal(C2, ref[r].C)
        asm.release(C2)


def test_a_single_layer_keeps_its_sums(rng):
    """With one layered resolution, C_1 is the last layer's: its fallback may change it,
    so C_1 is not its own resume data and its sums are kept (a resume would otherwise
    take sums from changed entries)."""
    A = rng.standard_normal((90, 40))
    B = rng.standard_normal((40, 30))
    lm = LayeredMatmul(A, B, planes=3, cutoff=1)
    ea, eb = lm.encode()
    plan = Plan(lm.bits, lm.planes, 40, tuple(lm.schedule), Tiling(90, 30, 3, 2))
    assert plan.layers == 1
    asm = Assembly(ea, eb, plan.schedule, [plan.layout(0)[1]], keep_sums=True)
    asm.start(0)
    assert not asm.c1_is_sums
