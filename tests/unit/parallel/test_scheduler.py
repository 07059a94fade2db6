"""The scheduling policy, without MPI: order, depth, affinity, backups, duplicates, hangs."""
from lrmpi import config
from lrmpi.parallel.partition import Tiling
from lrmpi.parallel.scheduler import Scheduler, hang_limit


def make(n_tiles=4, n_res=3, workers=(1, 2)):
    tiles = Tiling(64 * n_tiles, 32, n_tiles, 1).tiles()
    keys = lambda res, tile: {("A", tile.index, res + 1), ("B", 0, res + 1)}  # noqa: E731
    return Scheduler(tiles, n_res, workers, keys), tiles


def test_lowest_resolution_first_depth_and_keys_sent_once():
    s, tiles = make()
    got = [s.assign(w, 0.0) for w in (1, 1, 1, 2, 2)]
    assert got[2] is None  # depth 2
    first = [t for t in got if t is not None]
    assert [t.res for t in first] == [0, 0, 0, 0]
    assert sorted(t.tile.index for t in first) == [0, 1, 2, 3]
    # B's plane travels once to each worker, A's per tile
    b_keys = [k for t in first if t.worker == 1 for k in t.keys if k[0] == "B"]
    assert b_keys == [("B", 0, 1)]


def test_lookahead_limits_resolutions_in_flight_and_results_advance():
    with config.configure(depth=100, lookahead=2):
        s, tiles = make()
        tasks = []
        while (t := s.assign(1, 0.0)) is not None:
            tasks.append(t)
        assert {t.res for t in tasks} == {0, 1}  # not resolution 2 yet
        for t in tasks:
            assert s.complete(t, 1.0)
        assert not s.finished


def test_a_duplicate_result_is_dropped_and_affinity_prefers_own_tiles():
    s, tiles = make()
    a = s.assign(1, 0.0)
    assert s.complete(a, 0.5)
    # the same (res, tile) again, e.g. a backup's slower copy
    s.outstanding[2].append(a.__class__(99, a.res, a.tile, 2, [], 0.0))
    assert not s.complete(s.outstanding[2][0], 0.6)
    s.advance()
    nxt = s.assign(1, 1.0)
    assert nxt.res == 1 and nxt.tile.index == a.tile.index  # worker 1 already holds its A rows


def test_a_straggling_task_is_backed_up_on_an_idle_worker():
    with config.configure(backup_factor=2.0, backup_min_s=0.0, depth=1):
        s, tiles = make(n_tiles=3, n_res=1)
        slow = s.assign(1, 0.0)
        t1 = s.assign(2, 0.0)
        assert s.complete(t1, 1.0)
        t2 = s.assign(2, 1.0)
        assert s.complete(t2, 2.0)  # two tasks of 1 s: the median
        assert s.assign(2, 2.0) is None  # worker 1 has run 2 s: not more than 2 x median
        backup = s.assign(2, 10.0)  # at 10 s it has: its tile goes to worker 2 too
        assert backup is not None and backup.tile.index == slow.tile.index
        assert s.complete(backup, 10.5) and not s.complete(slow, 11.0)  # first result wins
        assert s.assign(2, 11.0) is None


def test_hang_limits():
    with config.configure(hang_first_s=600.0, hang_factor=20.0, hang_min_s=30.0):
        assert hang_limit([]) == 600.0
        assert hang_limit([0.1, 0.2]) == 30.0
        assert hang_limit([0.1, 5.0]) == 100.0
        assert hang_limit([0.1], timeout=3.0) == 3.0
    s, _ = make(n_tiles=1, n_res=1, workers=(1,))
    t = s.assign(1, 0.0)
    assert s.watch.hung(10.0, timeout=5.0)[:2] == (1, t)
    assert s.watch.hung(4.0, timeout=5.0) is None


def test_durations_compare_per_unit_of_work_and_later_resolutions_wait_until_available():
    """A task of a resolution 4x the work is not a straggler at 3x the median time of
    the smaller tasks; at 9x it is. Resolutions past `available` are not handed out."""
    with config.configure(backup_factor=2.0, backup_min_s=0.0, depth=1, lookahead=3):
        tiles = Tiling(64 * 3, 32, 3, 1).tiles()
        s = Scheduler(tiles, 2, (1, 2), lambda res, tile: set(), weights=[1, 4])
        s.available = 1
        for w, t0 in ((1, 0.0), (2, 0.0), (1, 1.0)):  # three tasks of 1 s each
            task = s.assign(w, t0)
            assert task.res == 0
            assert s.complete(task, t0 + 1.0)
        assert s.assign(1, 2.0) is None  # resolution 0 done; 1 not available yet
        s.advance()
        s.available = 2
        big = s.assign(1, 2.0)
        assert big.res == 1 and big.weight == 4
        assert s.assign(2, 2.0).res == 1
        assert s.complete(s.outstanding[2][0], 6.0)  # 4 s for 4 units: the same rate
        assert s.complete(s.assign(2, 6.0), 10.0)   # the last tile, likewise
        assert s.assign(2, 10.0) is None  # worker 1 at 8 s = 2 x 1 s x 4: not yet
        backup = s.assign(2, 11.0)         # at 9 s: backed up
        assert backup is not None and backup.tile.index == big.tile.index
