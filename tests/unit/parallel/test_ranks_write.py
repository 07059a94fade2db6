"""The root's side of results written by the ranks, without MPI: a resolution is
sealed once it has every tile, finished once every worker sealed it, in order."""
from lrmpi.parallel.partition import Tiling
from lrmpi.parallel.ranks_write import RanksWrite


class Ranks:
    """The endpoints' seal/sealed, recorded and scripted."""

    workers = [1, 2]

    def __init__(self):
        self.sealed_sent, self.answers = [], []

    def seal(self, r):
        self.sealed_sent.append(r)

    def sealed(self):
        out, self.answers = self.answers, []
        return out


class Record:
    """Resolutions.tile_in / written, recorded."""

    def __init__(self, ntiles):
        self.ntiles, self.tiles, self.finished = ntiles, [], []

    def tile_in(self, r, tile, done):
        self.tiles.append((r, tile.index, done))
        return done == self.ntiles

    def written(self, r, cmax, parts):
        self.finished.append((r, cmax, parts))


def test_seal_when_complete_finish_when_all_sealed_in_order():
    tiles = Tiling(40, 10, 2, 1).tiles()
    ranks, record = Ranks(), Record(len(tiles))
    rw = RanksWrite(tiles, ranks, record)
    rw.tile(0, tiles[1], 2.5)
    assert ranks.sealed_sent == []
    rw.tile(0, tiles[0], 4.0)
    assert ranks.sealed_sent == [0] and rw.pending
    for t in tiles:
        rw.tile(1, t, 1.0)
    assert ranks.sealed_sent == [0, 1]
    # resolution 1 is sealed by both workers before 0 is: it waits for 0
    ranks.answers = [(1, (1, "rank0001-res002.h5", [0, 1])), (2, (1, None, [])),
                     (2, (0, "rank0002-res001.h5", [1]))]
    assert rw.poll() and record.finished == []
    ranks.answers = [(1, (0, "rank0001-res001.h5", [0]))]
    assert rw.poll()
    corners = {t.index: (t.index, t.r0, t.r1, t.c0, t.c1) for t in tiles}
    assert record.finished == [
        (0, 4.0, [("rank0001-res001.h5", [corners[0]]), ("rank0002-res001.h5", [corners[1]])]),
        (1, 1.0, [("rank0001-res002.h5", [corners[0], corners[1]])])]
    assert not rw.pending and not rw.poll()
    assert [done for _, _, done in record.tiles] == [1, 2, 1, 2]
