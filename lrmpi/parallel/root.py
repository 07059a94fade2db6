"""Root and worker sides of a distributed layered matmul (SPEC §2).

Worked example: `mpirun -n 3`, A and B 4096 x 4096, 4 planes, antidiagonal
order (7 resolutions).

  rank 0 (root) reads and encodes A and B, and cuts C into 8 row tiles of 512
  rows (partition.py). Tasks (resolution r, tile t) are handed out lowest r
  first, at most DEPTH = 2 outstanding per worker, so a worker always has its
  next task queued. Each WORK carries exactly the plane blocks the worker
  lacks: task (1, t0) to rank 1 carries A[t0] plane 1 and B plane 1; task
  (2, t0), later, only A[t0] plane 2 and B plane 2 — planes travel in
  significance order, as they are needed.

  ranks 1 and 2 (workers) compute the tile's exact level sums with the int8
  kernels and send them back (protocol.py).

  The root adds each result into the exact accumulator and decodes that tile
  of C_r at once; when all 8 tiles of r are in, it checkpoints C_r and logs a
  line. Results of r+1 that arrive first wait in a buffer, so C_r never sees
  pairs of a later resolution.

A slow worker does not hold a resolution hostage: tiles go to whichever worker
asks (affinity only prefers the worker already holding the tile's A rows), and
when r has no unassigned tile left, an idle worker recomputes the oldest tile
of r that has run BACKUP_FACTOR times longer than the median task (the first
result wins, the other is dropped).

With one rank (or without mpi4py) the root computes each task itself through
the same scheduling code (LocalEndpoint). The root never busy-waits: it polls
with MPI_Testsome and sleeps with an exponential Backoff in between.
"""
import hashlib
import socket
import statistics
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lrmpi.errors import CheckpointError, WorkerError
from lrmpi.log import logger
from lrmpi.numerics import bounds
from lrmpi.numerics.accumulate import ExactAccumulator
from lrmpi.numerics.buffers import BufferPool, ScratchPool, prefault
from lrmpi.numerics.layered import PlaneView, level_sums, sum_dtype
from lrmpi.numerics.schedule import levels, n_levels
from lrmpi.parallel import faults, protocol
from lrmpi.parallel.comm import mpi, rank_size
from lrmpi.parallel.partition import Tiling, default_tiling
from lrmpi.parallel.protocol import Operand, Tag

DEPTH = 2             # tasks outstanding per worker
LOOKAHEAD = 2         # resolutions that may be in flight at once
BACKUP_FACTOR = 2.0   # recompute a task running this many times the median task time
BACKUP_MIN_S = 0.05   # ... and at least this long
STOP_TIMEOUT_S = 10.0  # workers that do not acknowledge STOP by then get MPI_Abort
HANG_FIRST_S = 600.0   # a worker silent this long on its first task is hung ...
HANG_FACTOR = 20.0     # ... later, this many median task times
HANG_MIN_S = 30.0      # ... but at least this long (--worker-timeout overrides)


class Backoff:
    """Sleep between polls: first `first` s, doubling up to `cap` s; reset on activity."""

    def __init__(self, first=50e-6, cap=2e-3):
        self.first, self.cap, self.t = first, cap, first

    def sleep(self):
        time.sleep(self.t)
        self.t = min(2 * self.t, self.cap)

    def reset(self):
        self.t = self.first


@dataclass
class Task:
    id: int
    res: int        # 0-based resolution
    tile: object    # partition.Tile
    worker: int
    keys: list      # (operand, block, plane) sent with it
    started: float
    buf: object = None
    req: object = None


@dataclass
class Outcome:
    """What a run ended with (on the root)."""

    status: str                 # complete | deadline | failed
    completed: int              # last completed resolution (1-based), 0 if none
    planned: int
    reason: str = ""
    resolutions: list = field(default_factory=list)  # per-resolution metadata dicts


def fingerprint(A, B):
    """Hash of both operands (values and shapes) that a resumed job must match.

    SHA-256 because x86 has instructions for it: 1.5 GB/s here, blake2b 0.9.
    """
    h = hashlib.sha256()
    for X in (A, B):
        h.update(np.asarray(X.shape, np.int64).tobytes())
        h.update(memoryview(np.ascontiguousarray(X)).cast("B"))
    return h.hexdigest()[:32]


# --- endpoints: how the root reaches a worker ---

class LocalEndpoint:
    """The root's own compute, for one rank: tasks run at once, in order."""

    def __init__(self, root):
        self.root, self.ready = root, deque()

    def send(self, task):
        self.ready.append((task, self.root.compute_local(task)))

    def poll(self):
        out = list(self.ready)
        self.ready.clear()
        return out


class MpiEndpoints:
    """Nonblocking sends of work and receives of results, one per outstanding task."""

    def __init__(self, root, comm):
        self.root, self.comm, self.MPI = root, comm, mpi()
        self.sends = []      # requests of WORK/PLANE sends (their buffers are the root's)
        self.pending = []    # tasks with a posted result receive
        self.received = {w: 0 for w in range(1, comm.Get_size())}  # results per worker

    def send(self, task):
        r = self.root
        self.sends.append(self.comm.Isend(
            protocol.encode_work(task.id, task.res, task.tile.index, task.keys),
            dest=task.worker, tag=Tag.WORK))
        for op, block, plane in task.keys:
            arr = r.plane_block(op, block, plane)
            r.traffic[task.res][0] += arr.nbytes
            self.sends.append(self.comm.Isend(arr, dest=task.worker, tag=Tag.PLANE))
        task.buf = r.result_buffer(task)
        task.req = self.comm.Irecv(task.buf, source=task.worker, tag=Tag.RESULT)
        self.pending.append(task)

    def poll(self):
        if self.sends:  # retire finished sends so the list stays short
            self.sends = [s for s in self.sends if not s.Test()]
        if not self.pending:
            return []
        done = self.MPI.Request.Testsome([t.req for t in self.pending]) or []
        out = []
        for i in sorted(done, reverse=True):
            task = self.pending.pop(i)
            self.received[task.worker] += 1
            self.root.traffic[task.res][1] += task.buf.nbytes
            tid, sums = protocol.decode_result(task.buf, task.tile.shape,
                                               self.root.sdtype[task.res])
            if tid != task.id:
                raise RuntimeError(f"worker {task.worker} answered task {tid}, expected {task.id}")
            out.append((task, sums))
        return out

    def check_error(self):
        """A worker's ERROR report, raised as WorkerError."""
        status = self.MPI.Status()
        if self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=Tag.ERROR, status=status):
            report = self.comm.recv(source=status.Get_source(), tag=Tag.ERROR)
            raise WorkerError(f"{report['where']}: {report['error']}") \
                from _RemoteTraceback(report["traceback"])

    def stop(self, workers, timeout):
        """STOP every worker; collect the results each says it sent (BYE); Abort on timeout."""
        for w in workers:
            self.sends.append(self.comm.Isend(protocol.STOP_MESSAGE, dest=w, tag=Tag.STOP))
        byes, status = {}, self.MPI.Status()
        limit, backoff = time.time() + timeout, Backoff()
        while True:
            progressed = bool(self.poll())
            while self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=Tag.BYE, status=status):
                byes[status.Get_source()] = self.comm.recv(source=status.Get_source(),
                                                           tag=Tag.BYE)
                progressed = True
            while self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=Tag.ERROR, status=status):
                self.comm.recv(source=status.Get_source(), tag=Tag.ERROR)  # already failing
            if len(byes) == len(workers) and all(self.received[w] >= byes[w] for w in workers):
                break
            if time.time() > limit:
                size = self.comm.Get_size()
                silent = [f"worker {w} of {size} on {self.root.hosts.get(w, '?')}"
                          for w in workers if w not in byes or self.received[w] < byes[w]]
                sys.stderr.write(f"lrmpi: error: {', '.join(silent)} did not stop within "
                                 f"{timeout:.0f} s (hung?); ending the job\n")
                sys.stderr.flush()
                self.comm.Abort(1)
            backoff.reset() if progressed else backoff.sleep()
        for task in self.pending:  # tasks a worker skipped after STOP: cancel the receives
            task.req.Cancel()
        self.MPI.Request.Waitall([t.req for t in self.pending] + self.sends)
        self.pending, self.sends = [], []


class WorkerTimeout(WorkerError):
    """A worker stopped answering (hung, or stuck in a kernel)."""


class _RemoteTraceback(Exception):
    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


# --- root ---

class Root:
    """The root side: root_init (constructor), root_run, root_stop."""

    def __init__(self, lm, comm=None, *, writer=None, deadline=None, signals=None,
                 resume=None, start=None, on_resolution=None, worker_timeout=None):
        self.worker_timeout, self.hosts = worker_timeout, {}
        self.start = time.perf_counter() if start is None else start
        self.lm, self.comm = lm, comm
        rank, size = rank_size(comm)
        self.workers = list(range(1, size))
        self.endpoint = MpiEndpoints(self, comm) if self.workers else LocalEndpoint(self)
        self.writer, self.deadline, self.signals = writer, deadline, signals
        self.on_resolution = on_resolution
        self.tty = sys.stderr.isatty() and logger.isEnabledFor(20)
        self.ea, self.eb = lm.encode()
        logger.debug("lrmpi: encoded at %.3f s", time.perf_counter() - self.start)
        m, k = self.ea.shape
        n = self.eb.shape[0]
        self.tiling = default_tiling(m, n, len(self.workers))
        self.tiles = self.tiling.tiles()
        self.schedule = lm.schedule
        self.nlevels = [n_levels(r) for r in self.schedule]
        self.sdtype = [sum_dtype(r, k, lm.bits) for r in self.schedule]
        # resolution 1's bound now, while the workers wait anyway; each later one
        # when its resolution finishes (all at once before the first dispatch
        # cost 0.1 s at n = 4096; after it, run beside busy workers, 0.8 s)
        self.bounds = bounds.Bounds(self.ea, self.eb, self.schedule)
        self.bounds.upto(0)
        logger.debug("lrmpi: bounds at %.3f s", time.perf_counter() - self.start)
        self.acc = ExactAccumulator(m, n, lm.bits, lm.planes, k)
        # reused buffers: results in flight, C and resume state waiting for the disk
        self.scratch = ScratchPool()
        self.c_pool = BufferPool((m, n), np.float64, 3)
        # with a checkpoint, each resolution's level sums wait here for the disk
        # (they are its resume data); without one, buffers go back at once
        self.held = {} if writer is not None else None
        self.results_from = {w: 0 for w in self.workers}
        self.traffic = [[0, 0] for _ in self.schedule]  # bytes sent, received per resolution
        self.meta, self.cmax, self.elapsed_offset, self.cur = [], [], 0.0, 0
        if resume is not None and resume.attrs.get("completed", 0) > 0:
            self._load(resume)
        # a fresh run's first resolution is one level sum on a zero accumulator:
        # its tiles decode straight from the sums, which wait here and go into
        # the limbs once C_1 is out (accumulate.decode_sum)
        self.deferred = [] if self.cur == 0 and self.nlevels[0] == 1 else None
        # the first C buffer and the limbs are hundreds of MB at n = 4096: fault
        # them in on a thread. Resolution 1 does not need the limbs (see _apply):
        # then the deferred adds fault them in once it is out, not beside its tiles
        prefault([(self.c_pool, 1)], [] if self.deferred is not None else [self.acc.limbs])
        R = len(self.schedule)
        self.todo = {r: deque(self.tiles) for r in range(self.cur, R)}
        self.done = {r: set() for r in range(self.cur, R)}
        self.buffered = {r: {} for r in range(self.cur, R)}
        self.cbuf, self.tile_max = {}, {}
        self.outstanding = {w: deque() for w in self.workers or [0]}  # FIFO per worker
        self.have = {w: set() for w in self.workers or [0]}
        self.owner, self.backed_up, self.durations = {}, set(), []
        self.last_done = {}
        self.next_id = 0

    def _load(self, ckpt):
        """Continue after the checkpoint's last resolution, from its exact state:
        the level sums of every completed resolution, added again."""
        c = int(ckpt.attrs["completed"])
        for i in range(1, c + 1):
            sums = ckpt.sums(i, self.acc.limbs.shape[1:], safe=True)
            if [lv for lv, _ in sums] != levels(self.schedule[i - 1]):
                raise CheckpointError(f"{ckpt.path}: the resume data of resolution {i} "
                                      "holds other levels than its pairs")
            for level, S in sums:
                self.acc.add(S, level)
        for i in range(1, c + 1):
            attrs, _ = ckpt.resolution(i, datasets=False)
            self.meta.append(attrs)
            self.cmax.append(float(attrs["cmax"]))
        self.elapsed_offset = float(self.meta[-1]["elapsed_s"])
        self.start = time.perf_counter()
        self.cur = c

    # --- data a task needs ---
    def keys_for(self, res, tile):
        pairs = self.schedule[res]
        return ({(Operand.A, tile.rb, p) for p, _ in pairs}
                | {(Operand.B, tile.cb, q) for _, q in pairs})

    def plane_block(self, op, block, plane):
        if op == Operand.A:
            r0, r1 = self.tiling.rows(block)
            return self.ea.digits[plane - 1, r0:r1]
        c0, c1 = self.tiling.cols(block)
        return self.eb.digits[plane - 1, c0:c1]

    def result_buffer(self, task):
        r = task.res
        return self.scratch.get(
            (protocol.result_size(self.nlevels[r], task.tile.shape, self.sdtype[r]),), np.int64)

    def compute_local(self, task):
        faults.on_task(0)
        t = task.tile
        task.buf = self.result_buffer(task)
        return level_sums(PlaneView(self.ea, t.r0, t.r1), PlaneView(self.eb, t.c0, t.c1),
                          self.schedule[task.res], self.lm.bits,
                          out=protocol.result_body(task.buf, self.nlevels[task.res], t.shape,
                                                   self.sdtype[task.res]),
                          scratch=self.scratch)

    # --- scheduling ---
    def _pick(self, w):
        """(res, tile) for worker w: lowest resolution first, preferring w's own tiles."""
        for r in range(self.cur, min(self.cur + LOOKAHEAD, len(self.schedule))):
            todo = self.todo[r]
            if todo:
                for i, tile in enumerate(todo):
                    if self.owner.get(tile.index) == w:
                        del todo[i]
                        return r, tile
                return r, todo.popleft()
        return self._backup(w)

    def _backup(self, w):
        """A task of the current resolution held up on a straggling worker, to run
        again on idle worker w: the one it computes if that has run too long, and
        the ones queued behind it, which wait just as long."""
        if not self.workers or len(self.durations) < 2:
            return None
        limit = max(BACKUP_MIN_S, BACKUP_FACTOR * statistics.median(self.durations))
        now = time.perf_counter()
        for v in self.workers:
            if v == w or not self.outstanding[v]:
                continue
            head = self.outstanding[v][0]
            if now - max(head.started, self.last_done.get(v, 0.0)) <= limit:
                continue
            for task in self.outstanding[v]:
                key = (task.res, task.tile.index)
                if (task.res == self.cur and key not in self.backed_up
                        and task.tile.index not in self.done[task.res]):
                    self.backed_up.add(key)
                    logger.debug("lrmpi: backup of resolution %d tile %d from rank %d",
                                 task.res + 1, task.tile.index, v)
                    return task.res, task.tile
        return None

    def dispatch(self):
        """Give every worker with room up to DEPTH tasks; True if any was sent."""
        sent = False
        for w in self.workers or [0]:
            while len(self.outstanding[w]) < DEPTH:
                pick = self._pick(w)
                if pick is None:
                    break
                res, tile = pick
                keys = sorted(self.keys_for(res, tile) - self.have[w])
                self.have[w].update(keys)
                task = Task(self.next_id, res, tile, w, keys, time.perf_counter())
                self.next_id += 1
                self.outstanding[w].append(task)
                self.endpoint.send(task)
                sent = True
                if not self.workers:
                    return True  # computed inline: let the caller poll and check the clock
        return sent

    # --- results ---
    def on_result(self, task, sums):
        w = task.worker
        self.outstanding[w].remove(task)
        now = time.perf_counter()
        self.durations.append(now - max(task.started, self.last_done.get(w, 0.0)))
        self.last_done[w] = now
        self.owner[task.tile.index] = w
        r, t = task.res, task.tile.index
        if r < self.cur or t in self.done[r] or t in self.buffered[r]:
            self.scratch.put(task.buf)  # the slower copy of a backed-up task
            return
        if r > self.cur:
            self.buffered[r][t] = (sums, task.buf)
            return
        self._apply(r, task.tile, sums, task.buf)

    def _apply(self, r, tile, sums, buf):
        logger.debug("lrmpi: result r%d t%d at %.3f s", r + 1, tile.index, self.elapsed())
        if r not in self.cbuf:
            self.cbuf[r] = self.c_pool.get()
        C = self.cbuf[r][tile.r0:tile.r1, tile.c0:tile.c1]
        erow, ecol = self.ea.exps[tile.r0:tile.r1], self.eb.exps[tile.c0:tile.c1]
        if r == 0 and self.deferred is not None:
            (level, S), = sums
            self.acc.decode_sum(S, level, erow, ecol, out=C)
            self.deferred.append((tile, sums, buf))
            amax = max(float(C.max()), -float(C.min()))  # the tile is still in cache
        else:
            for level, S in sums:
                self.acc.add(S, level, tile.r0, tile.c0)
            self._done_with(r, tile, sums, buf)
            _, amax = self.acc.decode(erow, ecol, out=C, row0=tile.r0, col0=tile.c0,
                                      with_max=True)
        # max|C_r| tile by tile, as the tiles are decoded: no pass over C at the end
        self.tile_max[r] = max(self.tile_max.get(r, 0.0), amax)
        self.done[r].add(tile.index)
        self._progress(r)
        if len(self.done[r]) == len(self.tiles):
            self._finish(r)
            nxt = self.cur = r + 1
            if nxt < len(self.schedule):
                # results of r+1 that came early; applying them may finish r+1 too
                # (and so on), which advances self.cur inside this loop
                early, self.buffered[nxt] = sorted(self.buffered[nxt].items()), {}
                for t, (sums, buf) in early:
                    self._apply(nxt, self.tiles[t], sums, buf)

    def _finish(self, r):
        C = self.cbuf.pop(r)
        self.cmax.append(self.tile_max.pop(r))
        babs = self.bounds.upto(r)
        rel = float(bounds.bound_rel(babs, self.cmax)[-1])
        pairs = sum(len(x) for x in self.schedule[:r + 1])
        meta = {"index": r + 1, "elapsed_s": self.elapsed(), "pairs": pairs,
                "bound_abs": float(babs[r]), "bound_rel": rel, "cmax": self.cmax[-1],
                "bytes_sent": self.traffic[r][0], "bytes_received": self.traffic[r][1]}
        self.meta.append(meta)
        if self.on_resolution is not None:
            self.on_resolution(meta, C)  # C is reused later: callers copy what they keep
        if self.deferred:  # resolution 1 is out: now its sums go into the limbs
            for tile, sums, buf in self.deferred:
                for level, S in sums:
                    self.acc.add(S, level, tile.r0, tile.c0)
                self._done_with(r, tile, sums, buf)
            self.deferred = None
        if self.writer is None:
            self._report(meta)
            self.c_pool.put(C)
            return
        held = self.held.pop(r)
        names, shape = levels(self.schedule[r]), self.acc.limbs.shape[1:]

        def write_sums(f):  # on the writer thread: the resolution's sums, tile by tile
            f.attrs["levels"] = names
            d = f.create_dataset("sums", (len(names), *shape), dtype=self.sdtype[r])
            for tile, tile_sums, _ in held:
                for i, (_, S) in enumerate(tile_sums):
                    d[i, tile.r0:tile.r1, tile.c0:tile.c1] = S

        def release():  # on the writer thread: the buffers may be reused
            self.c_pool.put(C)
            for _, _, buf in held:
                self.scratch.put(buf)
        nbytes = len(names) * shape[0] * shape[1] * self.sdtype[r].itemsize
        self.writer.add_resolution(r + 1, {"C": C}, meta, sums=(write_sums, nbytes),
                                   done=lambda: self._report(meta), release=release)

    def _done_with(self, r, tile, sums, buf):
        """A result is in the limbs: its buffer waits for the checkpoint or is free."""
        if self.held is None:
            self.scratch.put(buf)
        else:
            self.held.setdefault(r, []).append((tile, sums, buf))

    def _progress(self, r):
        """A one-line progress bar on a terminal (logs get one line per resolution)."""
        if not self.tty:
            return
        R, T, done = len(self.schedule), len(self.tiles), len(self.done[r])
        frac = (r + done / T) / R
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r[{bar:<30}] resolution {r + 1}/{R} tiles {done}/{T} "
                         f"{self.elapsed():7.2f} s")
        if r + 1 == R and done == T:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def _report(self, meta):
        if self.tty:
            sys.stderr.write("\r\033[K")  # clear the progress bar, then the log line
        logger.info("lrmpi: resolution %d/%d  %.3f s  pairs %d  bound_abs %.3e  bound_rel %.3e",
                    meta["index"], len(self.schedule), meta["elapsed_s"], meta["pairs"],
                    meta["bound_abs"], meta["bound_rel"])

    def elapsed(self):
        return self.elapsed_offset + time.perf_counter() - self.start

    # --- the loop ---
    def stop_reason(self):
        if self.signals is not None and self.signals.received:
            return f"received {self.signals.received}"
        if self.deadline is not None and self.deadline.expired():
            return "deadline reached"
        return None

    def run(self):
        """root_run: schedule, gather, checkpoint until done or told to stop."""
        backoff = Backoff()
        try:
            self.start_workers()
            while self.cur < len(self.schedule):
                reason = self.stop_reason()
                if reason:
                    return self.stop("deadline", reason)
                progressed = self.dispatch()
                for task, sums in self.endpoint.poll():
                    self.on_result(task, sums)
                    progressed = True
                if self.workers:
                    self.endpoint.check_error()
                    self.check_hung()
                if self.writer is not None:
                    self.writer.check()  # e.g. the disk is full: fail now, not later
                backoff.reset() if progressed else backoff.sleep()
            return self.stop("complete")
        except BaseException as exc:
            self.fail(exc)
            raise

    def start_workers(self):
        msg = protocol.job_message(self.lm.bits, self.lm.planes, self.ea.shape[1],
                                   self.schedule, self.tiling)
        for w in self.workers:
            self.comm.send(msg, dest=w, tag=Tag.JOB)
        self.hosts = {w: self.comm.recv(source=w, tag=Tag.HELLO) for w in self.workers}

    def check_hung(self):
        """WorkerTimeout if a worker has sat on its current task far too long."""
        if self.worker_timeout is not None:
            limit = self.worker_timeout
        elif self.durations:
            limit = max(HANG_MIN_S, HANG_FACTOR * statistics.median(self.durations))
        else:
            limit = HANG_FIRST_S
        now = time.perf_counter()
        for w in self.workers:
            if self.outstanding[w]:
                task = self.outstanding[w][0]
                running = now - max(task.started, self.last_done.get(w, 0.0))
                if running > limit:
                    raise WorkerTimeout(
                        f"worker {w} of {len(self.workers) + 1} on {self.hosts.get(w, '?')} "
                        f"did not answer for {running:.1f} s (task of resolution "
                        f"{task.res + 1}, tile {task.tile.index}; limit {limit:.1f} s)")

    def stop(self, status, reason=""):
        """root_stop: mark the checkpoint, stop the workers, report."""
        done = self.cur
        if self.writer is not None:
            self.writer.set_status(status, reason)  # waits for every resolution queued
            self.writer.close()
        if status == "deadline":
            logger.warning("lrmpi: stopping (%s) with resolution %d/%d on disk", reason, done,
                           len(self.schedule))
        if self.workers:
            self.endpoint.stop(self.workers, STOP_TIMEOUT_S)
        return Outcome(status, done, len(self.schedule), reason, self.meta)

    def fail(self, exc):
        message = f"{type(exc).__name__}: {exc}"
        try:
            if self.writer is not None:
                self.writer.set_status("failed", message)
        finally:
            if isinstance(exc, WorkerTimeout):  # it will never say BYE: end the job now
                sys.stderr.write(f"lrmpi: error: {exc}\n")
                sys.stderr.flush()
                self.comm.Abort(1)
            if self.workers:
                try:
                    self.endpoint.stop(self.workers, STOP_TIMEOUT_S)
                except Exception:  # the job is failing anyway: make sure it ends
                    self.comm.Abort(1)


# --- worker ---

def worker_run(comm):
    """Serve WORK until STOP; report exceptions to the root instead of dying."""
    MPI = mpi()
    rank, size = rank_size(comm)
    status, backoff = MPI.Status(), Backoff(cap=5e-3)
    job = None
    planes, sent, failed = {}, 0, False
    scratch = ScratchPool()
    while True:
        if not comm.Iprobe(source=0, tag=MPI.ANY_TAG, status=status):
            backoff.sleep()
            continue
        backoff.reset()
        tag = status.Get_tag()
        if tag == Tag.STOP:
            comm.Recv(np.empty(1, np.int64), source=0, tag=Tag.STOP)
            if job is not None:  # the root only waits for BYE once the job started
                comm.send(sent, dest=0, tag=Tag.BYE)
            return 1 if failed else 0
        if tag == Tag.JOB:
            job = comm.recv(source=0, tag=Tag.JOB)
            comm.send(socket.gethostname(), dest=0, tag=Tag.HELLO)
            tiling = Tiling(*job["tiling"])
            tiles = tiling.tiles()
            continue
        header = np.empty(protocol.WORK_LEN, np.int64)
        comm.Recv(header, source=0, tag=Tag.WORK)
        task, res, tile_index, keys = protocol.decode_work(header)
        for op, block, plane in keys:
            r0, r1 = tiling.rows(block) if op == Operand.A else tiling.cols(block)
            buf = np.empty((r1 - r0, job["k"]), np.int8)
            comm.Recv(buf, source=0, tag=Tag.PLANE)
            planes[(op, block, plane)] = buf
        if failed or comm.Iprobe(source=0, tag=Tag.STOP):
            continue  # stopping: the root does not need this result
        try:
            faults.on_task(rank)
            tile = tiles[tile_index]
            pairs = job["schedule"][res]
            nl, dtype = n_levels(pairs), sum_dtype(pairs, job["k"], job["bits"])
            buf = scratch.get((protocol.result_size(nl, tile.shape, dtype),), np.int64)
            sums = _compute(comm, rank, planes, tile, pairs, job["bits"],
                            protocol.result_body(buf, nl, tile.shape, dtype), scratch)
            if sums is not None:
                comm.Send(protocol.encode_result(buf, task, sums), dest=0, tag=Tag.RESULT)
                sent += 1
            scratch.put(buf)
        except Exception as exc:
            failed = True
            comm.send({"where": f"worker {rank} of {size} on {socket.gethostname()}",
                       "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()}, dest=0, tag=Tag.ERROR)


CHUNK_COLS = 1024  # a task is computed in chunks of this many columns of C


def _compute(comm, rank, planes, tile, pairs, bits, body, scratch):
    """A task's level sums into `body`, chunk by chunk; None if STOP came meanwhile.

    Between chunks the worker looks for STOP, so a stopping job (deadline,
    signal, next job of a stream) waits for at most one chunk of a slow worker,
    not for its whole task. Chunks are column ranges: each repacks only the
    tile's A rows (2 MB at k = 4096), a few percent of the chunk's work.
    """
    A = _Planes(planes, Operand.A, tile.rb)
    for c0 in range(0, tile.shape[1], CHUNK_COLS):
        c1 = min(c0 + CHUNK_COLS, tile.shape[1])
        t0 = time.perf_counter()
        level_sums(A, _Planes(planes, Operand.B, tile.cb, c0, c1), pairs, bits,
                   out=body[:, :, c0:c1], scratch=scratch)
        faults.after_task(rank, time.perf_counter() - t0)
        if comm.Iprobe(source=0, tag=Tag.STOP):
            return None
    return [(lv, body[i]) for i, lv in enumerate(levels(pairs))]  # body's order


class _Planes:
    """Plane p of a received block, rows [r0, r1) of it (all by default)."""

    def __init__(self, planes, op, block, r0=0, r1=None):
        self.planes, self.op, self.block, self.r0, self.r1 = planes, op, block, r0, r1

    def __getitem__(self, p):
        return self.planes[(self.op, self.block, p)][self.r0:self.r1]
