"""Rows of C written around the page cache read back through h5py exactly, at any
alignment of rows, memory and widths; blocks that are not whole rows are refused, for
h5py to write."""
import os

import h5py
import numpy as np
import pytest

from lrmpi.jobs.checkpoint.direct import ALIGN, DirectRows, file_options
from lrmpi.jobs.checkpoint import checksum
from lrmpi.jobs.checkpoint.atomic import AtomicH5
from lrmpi.numerics.buffers import BufferPool, aligned_empty


def test_aligned_buffers_start_at_a_page():
    for shape in [(1,), (3, 5), (512, 4096)]:
        a = aligned_empty(shape, np.float64)
        assert a.shape == shape and a.ctypes.data % ALIGN == 0 and a.flags.c_contiguous
    assert BufferPool((64, 64), np.float64, 1).get().ctypes.data % ALIGN == 0


def test_rows_written_directly_read_back(tmp_path, rng):
    path = str(tmp_path / "c.h5")
    C = aligned_empty((96, 512), np.float64)        # rows of 4 KiB
    C[...] = rng.standard_normal(C.shape)
    W = aligned_empty((40, 500), np.float64)        # rows of 4000 bytes
    W[...] = rng.standard_normal(W.shape)
    with h5py.File(path, "w", **file_options()) as f:
        d = DirectRows(f, "C", C.shape)
        w = DirectRows(f, "W", W.shape)
        assert d.offset % ALIGN == 0 and w.offset % ALIGN == 0
        direct = d.fd is not None  # False on a file system without O_DIRECT
        assert d.write_rows(0, C[:32]) == direct
        assert d.write_rows(32, C[32:64]) == direct
        assert not d.write_rows(64, C[64:65, :256])   # not whole rows: h5py's
        odd = np.empty(C[64:96].nbytes + 8, np.uint8)[8:].view(np.float64).reshape(32, 512)
        odd[...] = C[64:96]
        assert d.write_rows(64, odd) == direct        # memory off the page: bounced
        # rows of 4000 bytes: blocks that start and end inside pages, written out of
        # order; the pages two blocks share go through the cache, both halves kept
        for r0, r1 in [(9, 23), (0, 1), (23, 40), (1, 9)]:
            assert w.write_rows(r0, W[r0:r1]) == direct
        if not direct:
            d.dataset[...] = C
            w.dataset[...] = W
        d.close()
        w.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["C"][()], C)
        np.testing.assert_array_equal(f["W"][()], W)


def test_blocks_of_every_alignment_land_exactly(tmp_path, rng, monkeypatch):
    """Rows of 48000 bytes (C of 10000 x 6000), blocks of 1..40 rows from any row, the
    bounce buffer smaller than a block (several pieces), memory on and off the page:
    every byte lands where h5py would put it."""
    import lrmpi.jobs.checkpoint.direct as direct_mod
    monkeypatch.setattr(direct_mod, "BOUNCE", 3 * ALIGN)
    monkeypatch.setattr(direct_mod, "_local", type(direct_mod._local)())
    X = rng.standard_normal((120, 6000))
    path = str(tmp_path / "x.h5")
    with h5py.File(path, "w", **file_options()) as f:
        d = DirectRows(f, "X", X.shape)
        if d.fd is None:
            d.close()
            return  # no O_DIRECT here: nothing of this path runs
        r0, blocks = 0, []
        while r0 < len(X):
            r1 = min(len(X), r0 + int(rng.integers(1, 41)))
            blocks.append((r0, r1))
            r0 = r1
        for i in rng.permutation(len(blocks)):
            r0, r1 = blocks[i]
            src = aligned_empty((r1 - r0, 6000), np.float64, at=8 * int(rng.integers(0, 3)))
            src[...] = X[r0:r1]
            assert d.write_rows(r0, src)
        d.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["X"][()], X)


def test_a_streamed_resolution_file_is_whole_after_commit(tmp_path, rng):
    path = str(tmp_path / "res.h5")
    C = BufferPool((128, 1024), np.float64, 1).get()
    C[...] = rng.standard_normal(C.shape)
    a = AtomicH5(path, fsync=True, nbytes=C.nbytes, aligned=True)
    a.direct = DirectRows(a.f, "C", C.shape)
    for r0 in range(0, 128, 32):
        if not a.direct.write_rows(r0, C[r0:r0 + 32]):
            a.f["C"][r0:r0 + 32] = C[r0:r0 + 32]
    checksum.stamp(a.f["C"], C)
    a.commit()
    assert not os.path.exists(a.tmp)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["C"][()], C)


def test_any_layout_of_whole_rows_goes_one_way(tmp_path, rng, monkeypatch):
    """Fortran-ordered or other-dtype blocks are converted and written like the rest (an
    h5py write of one block among direct ones was overwritten at the flush by HDF5's
    sieve buffer: a level of sums read back as zeros); rows outside the dataset are an
    error; a file system that refuses a direct write (EINVAL) gets it, and the later
    ones, through the cache."""
    import errno

    import lrmpi.jobs.checkpoint.direct as direct_mod
    S = rng.integers(-2**40, 2**40, (4, 16, 256))
    path = str(tmp_path / "s.h5")
    with h5py.File(path, "w", **file_options()) as f:
        d = DirectRows(f, "S", S.shape, np.int64)
        if d.fd is None:
            d.close()
            return
        assert d.write_rows(0, np.asfortranarray(S[0]))
        assert d.write_rows(16, S[1].astype(np.float64))   # converted to int64 exactly
        with pytest.raises(ValueError):
            d.write_rows(60, S[2])
        real, refused = direct_mod._pwrite, []

        def einval(fd, view, at):
            if fd == d.fd:
                refused.append(at)
                raise OSError(errno.EINVAL, "refused")
            return real(fd, view, at)
        monkeypatch.setattr(direct_mod, "_pwrite", einval)
        assert d.write_rows(32, S[2]) and d.write_rows(48, S[3])
        assert len(refused) == 1 and d.fd is None
        d.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["S"][()], S)


def test_a_tile_outside_its_level_is_refused_before_any_write(tmp_path, rng):
    """put checks each block against its own level's rows and columns, as h5py does: a
    block running past its level (which write_rows would put in the next level's
    rows), a whole row given at c0 != 0 (written at column 0) and more blocks than
    levels are errors, and nothing of them lands in the file."""
    S = rng.integers(-2**40, 2**40, (2, 8, 512))
    path = str(tmp_path / "s.h5")
    with h5py.File(path, "w", **file_options()) as f:
        d = DirectRows(f, "S", S.shape, np.int64)
        d.put(0, 0, [S[0], S[1]])
        for r0, c0, parts in ((6, 0, [S[0, :4]]), (0, 5, [S[0, :1]]), (-1, 0, [S[0, :1]]),
                              (0, 0, [S[0], S[1], S[1]]), (4, 0, [S[0, :2], S[1, :8]])):
            with pytest.raises(ValueError):
                d.put(r0, c0, [np.full(np.shape(p), 9) for p in parts])
        d.put(6, 0, [np.full((2, 512), 3), np.full((2, 512), 4)])
        d.close()
    want = S.copy()
    want[0, 6:], want[1, 6:] = 3, 4   # no 9 anywhere: the refused blocks wrote nothing
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["S"][()], want)
