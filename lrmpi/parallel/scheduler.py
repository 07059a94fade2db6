"""Which task each worker computes next, which results count, and when a worker is
hung. Pure: no MPI, and the clock is passed in, so the policy is tested serially.

Worked example: 8 row tiles, workers 1 and 2, DEPTH = 2, LOOKAHEAD = 2, antidiagonal
resolutions r1, r2, ... Rank 1 gets (r1, t0), (r1, t1); rank 2 gets (r1, t2), (r1, t3).
Each finished task frees a slot: the next task is the lowest resolution with tiles
left, preferring the worker's own tiles (it already holds their A rows), and at
most LOOKAHEAD resolutions are in flight. When r1 has no unassigned tile left but a
tile of r1 has run BACKUP_FACTOR times the median task on a slow worker, an idle
worker gets it again (a backup); the first result counts, the other is dropped.
Tiles stay with the worker that holds their A blocks (design.md, "Plane distribution").
"""
import statistics
from collections import deque
from dataclasses import dataclass

from lrmpi import config


@dataclass
class Task:
    id: int
    res: int        # 0-based resolution
    tile: object    # partition.Tile
    worker: int
    keys: list      # (operand, block, plane) sent with it
    started: float
    buf: object = None   # the result's receive buffer (set by the endpoint)
    req: object = None   # its MPI request
    kernel_s: float = 0.0  # seconds its kernels took (reported with the result)
    weight: float = 1.0    # its work in units the scheduler compares durations in


def hang_limit(durations, timeout=None):
    """Seconds a rank may take for one task (or one share of a resolution) before
    it is called hung: `timeout` if given; else HANG_FACTOR times the longest so
    far, at least HANG_MIN_S; HANG_FIRST_S before anything finished."""
    c = config.get()
    if timeout is not None:
        return timeout
    if durations:
        return max(c.hang_min_s, c.hang_factor * max(durations))
    return c.hang_first_s


class Scheduler:
    """Tasks (resolution, tile) for `workers` (rank numbers; [0] for the root alone),
    from resolution `first` on. `keys_for(res, tile)`: the plane blocks a task needs.
    `weights[res]`: a task's work at resolution res (int8 products, say): durations
    are compared per unit of it, so a resolution of 15 products is not a straggler
    beside one of 4. `available`: resolutions below it may be handed out (raise it
    when the inputs of a later one exist). `pinned`: a tile stays on the worker that
    first took it, no stealing, no backups (results written by the ranks: the worker
    holds the tile's accumulator). `held`: plane blocks every worker holds from the start
    (broadcast to all: never sent with a task)."""

    def __init__(self, tiles, n_res, workers, keys_for, first=0, weights=None, pinned=False,
                 held=(), available=None):
        self.tiles, self.n_res, self.cur = tiles, n_res, first
        self.workers, self.keys_for = list(workers), keys_for
        self.weights = list(weights) if weights is not None else [1.0] * n_res
        self.available = n_res if available is None else available
        self.pinned = pinned
        self.todo = {r: deque(tiles) for r in range(first, n_res)}
        self.arrived = {r: set() for r in range(first, n_res)}  # tile indices with a result
        self.watch = Watch(self.workers)
        self.have = {w: set(held) for w in self.workers}       # plane blocks it holds
        self.owner, self.backed_up = {}, set()
        self.next_id = 0

    @property
    def outstanding(self):
        """Tasks per worker, oldest first."""
        return self.watch.outstanding

    @property
    def durations(self):
        return self.watch.durations

    def make_available(self, upto):
        """Resolutions below `upto` may be handed out (their inputs exist now)."""
        self.available = upto

    @property
    def finished(self):
        return self.cur >= self.n_res

    def assign(self, w, now):
        """The next Task for worker w (its plane keys not yet sent), or None when w has
        DEPTH tasks outstanding or nothing is left to do."""
        if len(self.outstanding[w]) >= config.get().depth:
            return None
        pick = self._pick(w) or (None if self.pinned else self._backup(w, now))
        if pick is None:
            return None
        res, tile = pick
        keys = sorted(set(self.keys_for(res, tile)) - self.have[w])
        self.have[w].update(keys)
        self.owner.setdefault(tile.index, w)  # it holds the tile's A blocks from now
        task = Task(self.next_id, res, tile, w, keys, now, weight=self.weights[res])
        self.next_id += 1
        self.watch.add(task)
        return task

    def _pick(self, w):
        """(res, tile): lowest resolution first; w's own tiles (it holds their A
        blocks), else a tile nobody owns, else one of the current resolution whose
        owner has no free slot, or any when tiles are few. Stealing from an owner
        that will ask soon, or for a later resolution, sends the tile's A blocks
        again: at 8 workers every tile changed hands each resolution, doubling the
        root's bytes."""
        depth = config.get().depth
        # with fewer tiles than two per worker, resolutions pipelined across workers
        # are the parallelism (one tile: worker 2 computes r + 1 while 1 computes r)
        few = len(self.tiles) < 2 * len(self.workers) and not self.pinned
        for r in range(self.cur, min(self.cur + config.get().lookahead, self.available)):
            todo = self.todo[r]
            for i, tile in enumerate(todo):
                if self.owner.get(tile.index) == w:
                    del todo[i]
                    return r, tile
            for i, tile in enumerate(todo):
                owner = self.owner.get(tile.index)
                if owner is None or few or (r == self.cur and not self.pinned and
                                            len(self.outstanding.get(owner, ())) >= depth):
                    del todo[i]
                    return r, tile
        return None

    def _backup(self, w, now):
        """A task of the current resolution held up on a straggling worker, to run
        again on idle worker w: the one it computes if that has run too long, and
        the ones queued behind it, which wait just as long."""
        if len(self.workers) < 2 or len(self.durations) < 2:
            return None
        c = config.get()
        median = statistics.median(self.durations)
        for v in self.workers:
            if v == w or not self.outstanding[v]:
                continue
            limit = max(c.backup_min_s, c.backup_factor * median * self.outstanding[v][0].weight)
            if self.watch.running(v, now) <= limit:
                continue
            for task in self.outstanding[v]:
                key = (task.res, task.tile.index)
                if (task.res == self.cur and key not in self.backed_up
                        and task.tile.index not in self.arrived[task.res]):
                    self.backed_up.add(key)
                    return task.res, task.tile
        return None

    def complete(self, task, now):
        """A task's result came back. True if it is the first for its (res, tile);
        False for the slower copy of a backed-up task (drop it)."""
        w = task.worker
        self.watch.done(task, now)
        if task.res < self.cur or task.tile.index in self.arrived[task.res]:
            return False  # both copies' workers hold the blocks; the first stays owner
        self.owner[task.tile.index] = w
        self.arrived[task.res].add(task.tile.index)
        return True

    def preload(self, res, indices):
        """Tiles of resolution res already done (resume data): not handed out."""
        indices = set(indices)
        self.todo[res] = deque(t for t in self.todo[res] if t.index not in indices)
        self.arrived[res] |= indices

    def advance(self):
        """The current resolution is complete: move on to the next."""
        self.cur += 1


class Watch:
    """Tasks outstanding per rank (oldest first) and how long tasks took: the hang
    check of every job kind, and the scheduler's backups. Pure: the clock is passed
    in. A task has .worker, .started and .weight (its work in units durations are
    compared in); a rank's next task is queued behind its current one, so a task's
    time counts from when the previous one finished."""

    def __init__(self, workers):
        self.outstanding = {w: deque() for w in workers}
        self.durations, self.last_done = [], {}

    def add(self, task):
        self.outstanding[task.worker].append(task)

    def done(self, task, now):
        """Task's result came back at `now`: its duration per unit of work recorded."""
        w = task.worker
        self.outstanding[w].remove(task)
        self.durations.append((now - max(task.started, self.last_done.get(w, 0.0))) / task.weight)
        self.last_done[w] = now

    def running(self, w, now):
        """How long rank w has been on its current (oldest outstanding) task."""
        return now - max(self.outstanding[w][0].started, self.last_done.get(w, 0.0))

    def hung(self, now, timeout=None):
        """(rank, task, seconds, limit) for a rank that sat on its current task longer
        than hang_limit (per unit of its work), else None."""
        for w, tasks in self.outstanding.items():
            if tasks:
                running = self.running(w, now)
                limit = hang_limit(self.durations, timeout)
                if timeout is None and self.durations:  # per unit of work, like backups
                    limit = max(config.get().hang_min_s, limit * tasks[0].weight)
                if running > limit:
                    return w, tasks[0], running, limit
        return None
