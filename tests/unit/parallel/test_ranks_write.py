"""The root's side of results written by the ranks, without MPI: a resolution is
sealed once it has every tile, finished once every worker sealed it, in order."""
import pytest

from lrmpi.errors import CheckpointError
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


def test_a_worker_that_could_not_seal_loses_that_resolution_and_the_later_ones():
    """SEALED with tiles None (the worker could not commit its file): r and every later
    resolution are never listed, whatever the other answers; earlier ones still are."""
    tiles = Tiling(40, 10, 2, 1).tiles()
    ranks, record = Ranks(), Record(len(tiles))
    rw = RanksWrite(tiles, ranks, record)
    for r in range(3):
        for t in tiles:
            rw.tile(r, t, 1.0)
    ranks.answers = [(1, (0, "rank0001-res001.h5", [0])), (2, (0, "rank0002-res001.h5", [1])),
                     (1, (1, None, None)), (2, (1, "rank0002-res002.h5", [1])),
                     (1, (2, "rank0001-res003.h5", [0])), (2, (2, "rank0002-res003.h5", [1]))]
    assert rw.poll()
    assert [r for r, _, _ in record.finished] == [0] and rw.lost == 1 and not rw.pending
    for t in tiles:   # a later resolution's tiles: not sealed any more
        rw.tile(3, t, 1.0)
    assert ranks.sealed_sent == [0, 1, 2] and not rw.pending


def test_a_resolution_whose_files_miss_a_tile_is_never_listed():
    """Every worker answered, but their files do not hold every tile (a worker with
    tiles answered "none"): a virtual dataset would read the missing tile as fill
    values, so the resolution is given up instead."""
    tiles = Tiling(40, 10, 2, 1).tiles()
    ranks, record = Ranks(), Record(len(tiles))
    rw = RanksWrite(tiles, ranks, record)
    for t in tiles:
        rw.tile(0, t, 1.0)
    ranks.answers = [(1, (0, "rank0001-res001.h5", [0])), (2, (0, None, []))]
    rw.poll()
    assert record.finished == [] and rw.lost == 0 and not rw.pending


def test_a_failing_job_still_lists_what_the_workers_seal_within_the_wait():
    """finish(): the answers that come within the wait list their resolutions; a
    resolution still waiting for an answer at the end is given up."""
    tiles = Tiling(40, 10, 2, 1).tiles()

    class Late(Ranks):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def sealed(self):   # the answers of resolution 0 come on the third poll
            self.calls += 1
            if self.calls == 3:
                return [(1, (0, "rank0001-res001.h5", [0])), (2, (0, "rank0002-res001.h5", [1])),
                        (1, (1, "rank0001-res002.h5", [0]))]
            return []
    ranks, record = Late(), Record(len(tiles))
    rw = RanksWrite(tiles, ranks, record)
    for r in range(2):
        for t in tiles:
            rw.tile(r, t, 1.0)
    rw.finish(seconds=0.5)
    assert [r for r, _, _ in record.finished] == [0] and rw.lost == 1 and not rw.pending

    def broken():
        raise OSError(28, "No space left on device")
    rw = RanksWrite(tiles, ranks, record)
    for t in tiles:
        rw.tile(0, t, 1.0)
    ranks.sealed = broken
    rw.finish(seconds=0.1)   # never raises: the job's own error is the one to tell
    assert rw.lost == 0 and not rw.pending


def test_a_resolution_whose_listing_raised_stops_the_later_ones():
    """written(r) raises (the root's writer failed): r is lost, and the failing job's
    finish() does not list r + 1 after it (resolutions are listed in order)."""
    tiles = Tiling(40, 10, 2, 1).tiles()

    class Flaky(Record):
        def written(self, r, cmax, parts):
            if r == 0:
                raise OSError(28, "No space left on device")
            super().written(r, cmax, parts)
    ranks, record = Ranks(), Flaky(len(tiles))
    rw = RanksWrite(tiles, ranks, record)
    for r in range(2):
        for t in tiles:
            rw.tile(r, t, 1.0)
    ranks.answers = [(1, (0, "rank0001-res001.h5", [0])), (2, (0, "rank0002-res001.h5", [1])),
                     (1, (1, "rank0001-res002.h5", [0]))]
    with pytest.raises(OSError):
        rw.poll()
    ranks.answers = [(2, (1, "rank0002-res002.h5", [1]))]
    rw.finish(seconds=0.2)
    assert record.finished == [] and rw.lost == 0 and not rw.pending


def test_a_job_that_lost_a_resolution_never_ends_complete():
    """settle(): nothing lost, nothing happens; a lost resolution raises the worker's
    error when it comes, else a CheckpointError naming the resolution."""
    tiles = Tiling(40, 10, 2, 1).tiles()
    rw = RanksWrite(tiles, Ranks(), Record(len(tiles)))
    rw.settle(lambda: None)
    rw.lost = 6

    def error():
        raise RuntimeError("worker 1 of 3: No space left on device")
    with pytest.raises(RuntimeError, match="No space"):
        rw.settle(error)
    with pytest.raises(CheckpointError, match="resolution 7 could not be listed"):
        rw.settle(lambda: None, seconds=0.05)
