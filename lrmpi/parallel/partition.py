"""Partition arithmetic: pure, testable without MPI (never imports mpi4py).

Worked example: C is 4096 x 4096, 2 workers, default tiling. Target about
tiles_per_worker = 4 tiles per worker, so 8 row blocks of 512 rows, one column
block (every tile needs all of B, which each worker receives once, plane by
plane, and the A rows of the tiles it computes):

    tile 0: rows    0..511,  cols 0..4095
    tile 1: rows  512..1023, cols 0..4095   ...   tile 7: rows 3584..4095

Columns are split too only when n is much larger than m (tall-skinny B.T).
"""
from dataclasses import dataclass

from lrmpi import config


def counts_displs(n_items, n_parts):
    """Near-equal block sizes and starting offsets of n_items split in n_parts."""
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    base, extra = divmod(n_items, n_parts)
    counts = [base + (1 if i < extra else 0) for i in range(n_parts)]
    displs = [sum(counts[:i]) for i in range(n_parts)]
    return counts, displs


def block_of(index, n_items, n_parts):
    """(start, stop) of block `index`."""
    counts, displs = counts_displs(n_items, n_parts)
    return displs[index], displs[index] + counts[index]


@dataclass(frozen=True)
class Tile:
    index: int
    rb: int   # row block
    cb: int   # column block
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def shape(self):
        return (self.r1 - self.r0, self.c1 - self.c0)


@dataclass(frozen=True)
class Tiling:
    m: int
    n: int
    row_blocks: int
    col_blocks: int

    def rows(self, rb):
        return block_of(rb, self.m, self.row_blocks)

    def cols(self, cb):
        return block_of(cb, self.n, self.col_blocks)

    def tiles(self):
        out = []
        for rb in range(self.row_blocks):
            r0, r1 = self.rows(rb)
            for cb in range(self.col_blocks):
                c0, c1 = self.cols(cb)
                out.append(Tile(len(out), rb, cb, r0, r1, c0, c1))
        return out


def default_tiling(m, n, workers):
    """About config.tiles_per_worker tiles per worker, rows first (see module docstring)."""
    c = config.get()
    want = max(1, c.tiles_per_worker * max(workers, 1))
    col_blocks = 1
    if n >= 4 * m:  # wide C: split columns as well
        col_blocks = min(want, max(1, n // max(m, c.min_tile_rows)))
    row_blocks = max(1, min(want // col_blocks, m // c.min_tile_rows or 1))
    return Tiling(m, n, row_blocks, col_blocks)
