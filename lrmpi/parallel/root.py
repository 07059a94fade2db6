"""The root side of a distributed layered matmul: Root (root_init), Root.run
(root_run), Root.stop (root_stop).

Worked example: `mpirun -n 3`, A and B 4096 x 4096, 4 planes, antidiagonal order.

  rank 0 (root) reads and encodes A and B, and cuts C into 8 row tiles of 512
  rows (partition.py; plan.py has what root and workers derive from that). The
  scheduler hands out tasks (resolution r, tile t), lowest r first, DEPTH
  outstanding per worker (scheduler.py). Each WORK carries exactly the plane blocks
  the worker lacks: task (1, t0) to rank 1 carries A[t0] plane 1 and B plane 1;
  task (2, t0), later, only A[t0] plane 2 and B plane 2 — planes travel in
  significance order, as they are needed (endpoints.py, protocol.py).

  ranks 1 and 2 (workers, worker.py) compute the tile's exact level sums (tilework.py).

  The root's message loop only receives, sends and schedules; a thread of its own
  (collector.py) adds each result into the exact accumulator and decodes that tile
  of C_r (assembly.py); when all 8 tiles of r are in, it checkpoints C_r and logs a
  line (resolutions.py). Results of r+1 that arrive first wait in a buffer, so C_r
  never sees pairs of a later resolution.

With one rank (or without mpi4py) the root computes each task itself (same
scheduling, same tile function) on a thread beside its loop (endpoints.ThreadEndpoint);
also beside the workers when it has a core of its own (`-n 2` on 2 cores), not when
ranks outnumber cores. It never busy-waits: MPI_Testsome, and a Backoff in between.
"""
import time

from lrmpi import config
from lrmpi.errors import CheckpointError
from lrmpi.log import logger
from lrmpi.numerics import bounds, planes
from lrmpi.numerics.buffers import release
from lrmpi.numerics.schedule import levels
from lrmpi.parallel import plan as plans, stages
from lrmpi.parallel.assembly import Assembly
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.collector import Collector
from lrmpi.parallel.comm import rank_size, root_has_a_core
from lrmpi.parallel.crt_stage import CrtStage
from lrmpi.parallel.endpoints import Endpoints, MatmulRanks, ResultBuffers, ThreadEndpoint, task_of
from lrmpi.parallel.partition import default_tiling
from lrmpi.parallel.progress import Figures, Progress
from lrmpi.parallel.messages import Operand
from lrmpi.parallel.ranks_write import STOP_SEALING_S, RanksWrite
from lrmpi.parallel.resolutions import RESULT, Resolutions, rewritten
from lrmpi.parallel.scheduler import Scheduler
from lrmpi.parallel.tilework import RootBlocks, compute_tile


class Root:
    """The root of a layered matmul `lm` (numerics.layered.LayeredMatmul) over `comm`.

    `control` (optional) decides when to stop and records the job's status:
    control.stop_reason() -> str or None, polled between steps, and
    control.mark(status, reason), called before the workers are stopped or the
    job is aborted. `writer`: the checkpoint writer (jobs.checkpoint), or None.
    `resume`: a checkpoint to continue from. `on_resolution(meta, C)` is called
    for each finished resolution (C read-only, reused later: copy what you keep).
    """

    def __init__(self, lm, comm=None, *, writer=None, control=None, resume=None, start=None,
                 on_resolution=None, worker_timeout=None, write="root"):
        self.start = time.perf_counter() if start is None else start
        self.elapsed_offset = 0.0
        self.lm, self.writer, self.control = lm, writer, control
        self.worker_timeout = worker_timeout
        workers = list(range(1, rank_size(comm)[1]))
        # results written by the ranks (ranks_write.py): a fresh job with workers and a
        # checkpoint; a resumed one continues with the root writing
        fresh = resume is None or resume.completed == 0
        written = write == "ranks" and writer is not None and bool(workers) and fresh
        if write == "ranks" and not written and writer is not None and workers:
            logger.info("lrmpi: a resumed job's results are written by the root")
        computes = (not workers or root_has_a_core(comm)) and not written
        self.computes = computes
        (m, k), n = lm.A.shape, lm.B.shape[1]
        tiling = default_tiling(m, n, len(workers) + (1 if computes else 0))
        # B whole (its column exponents need all of it), A by row block on a thread:
        # the first tiles go out while the rest of A is encoded
        with stages.STAGES.timed("encode"):
            self.ea, self.eb = lm.encode_streamed(
                [tiling.rows(rb) for rb in range(tiling.row_blocks)], stages.STAGES.timed)
        stages.STAGES.mark("B encoded")
        logger.debug("lrmpi: B encoded at %.3f s", self.elapsed())
        self.plan = plan = plans.Plan(lm.bits, lm.planes, k, tuple(lm.schedule), tiling,
                                      lm.moduli or 0, written)
        self.tiles = plan.tiles
        sdtype = [plan.layout(r)[1] for r in range(plan.nres)]
        # each resolution's bound when it finishes (A's norms need all of A encoded)
        self.bounds = bounds.Bounds(self.ea, self.eb, plan.schedule)
        self.assembly = Assembly(self.ea, self.eb, plan.schedule, sdtype, writer is not None,
                                 2 if plan.moduli else 1, sums_to=writer)
        # the CRT resolution, if any, is resolution plan.layers (0-based): its tasks
        # return their tile of C in float64 (crt_stage.py)
        self.crt = CrtStage(lm, tiling, self.assembly.c_pool) if plan.moduli else None
        self.figures = Figures(plan.nres, len(workers) + (1 if computes else 0))
        self.record = Resolutions(lm, self.ea, self.eb, self.bounds, crt=self.crt,
                                  writer=writer, on_resolution=on_resolution,
                                  progress=Progress(lm.planned, len(self.tiles)),
                                  figures=self.figures, shape=self.assembly.shape,
                                  ntiles=len(self.tiles), clock=self.elapsed,
                                  decoded=None if written else self.assembly.decoded)
        first = self._resume(resume) if resume is not None and resume.completed > 0 else 0
        if not written:  # with ranks writing, the workers hold the accumulators
            self.assembly.start(first)
        if writer is not None and writer.keep != "all":  # resolution 1's file will go
            self.assembly.c1_is_sums = False
        # B's planes (and CRT residues) broadcast to every worker: the scheduler counts
        # them as held, so they never travel point to point
        self.bcast = plans.bcast_planes(plan.schedule[first:], tiling, len(workers))
        self.crt_bcast = plans.crt_bcast(plan.moduli, tiling, len(workers))
        held = plans.held_by_broadcast(Operand.B, self.bcast, tiling) | \
            plans.held_by_broadcast(Operand.BF, self.crt_bcast, tiling)
        # rank 0 is a worker too when it computes (its blocks are in its memory already)
        self.scheduler = Scheduler(self.tiles, plan.nres, ([0] if computes else []) + workers,
                                   plan.keys, first, plan.weights(), pinned=written,
                                   held=held, available=plan.layers if self.crt else None)
        self.crt_sent = False
        self.a_last = planes.last_uses(plan.schedule)  # resolution -> A's planes done
        self.b_bcasts = None  # broadcast requests of B's planes, to release them after
        if self.crt and first > 0:
            self.crt.start()
        self.blocks = RootBlocks(self.ea, self.eb, tiling, self.crt)
        self.buffers = ResultBuffers(plan, self.assembly.scratch)
        self.ranks = MatmulRanks(comm, self.blocks, self.buffers, self.figures) if workers else None
        self.endpoints = Endpoints(ThreadEndpoint(self.compute_local) if computes else None,
                                   self.ranks)
        self.ranks_write = RanksWrite(self.tiles, self.ranks, self.record) if written else None
        # results are applied in order on the collector's thread (inline when the ranks
        # write: applying them sends SEAL, which is this thread's); at most `backlog`
        # wait there before the loop stops handing out tasks
        self.collector = Collector(self._apply, threaded=not written)
        self.backlog = max(2, 2 * len(workers))
        self.early = {r: {} for r in range(first, plan.nres)}  # results not handed over
        self.handed = {r: 0 for r in range(first, plan.nres)}  # ... and handed over
        if self.crt and first == plan.layers and resume is not None:
            self._resume_crt_tiles(resume)

    def _resume(self, ckpt):
        """Continue after the checkpoint's last resolution, from its exact state: the
        level sums of every completed resolution, added again. Returns it (0-based
        index of the next resolution)."""
        c = ckpt.completed
        shape, schedule = self.assembly.shape, self.plan.schedule

        def sums_of(i):
            if ckpt.has_sums(i):
                return ckpt.sums(i, shape, levels(schedule[i - 1]))
            if i != 1:  # never another resolution's C in its place (output.existing checks)
                raise CheckpointError(f"{ckpt.path}: the resume data of resolution {i} is missing")
            # resolution 1 was its own resume data (decoded exactly from its sums)
            return self.assembly.sums_from_c(ckpt.resolution(1)[1][RESULT])
        # only to compute more (not when all are listed); the CRT one adds no sums
        if c < self.plan.nres:
            self.assembly.resume(min(c, self.plan.layers), sums_of)
        for i in range(1, c + 1):
            self.record.resumed(ckpt.resolution_summary(i))
        self.elapsed_offset = float(self.record.meta[-1]["elapsed_s"])
        self.start = time.perf_counter()
        return c

    def _resume_crt_tiles(self, ckpt):
        """The tiles a stopped CRT resolution finished (resume data): kept, not
        computed again."""
        layers = self.plan.layers
        got = ckpt.partial(layers + 1, self.assembly.shape)
        if got is None:
            return
        C, rows = got
        by_corner = {(t.r0, t.r1, t.c0, t.c1): t for t in self.tiles}
        corners = [tuple(int(x) for x in r) for r in rows]
        done = [by_corner[c] for c in corners if c in by_corner]
        if len(done) != len(rows):  # another tiling (other ranks): recompute it all
            logger.info("lrmpi: the CRT resolution's finished tiles were cut for another "
                        "number of ranks: computing it again")
            return
        self.scheduler.preload(layers, [t.index for t in done])
        for t in done:
            self._hand(layers, t, C[t.r0:t.r1, t.c0:t.c1], None)
        logger.info("lrmpi: resuming the CRT resolution with %d of %d tiles done",
                    len(done), len(self.tiles))
        if self.handed[layers] == len(self.tiles):
            self.advance(layers)

    @property
    def cur(self):
        """0-based index of the resolution being completed (= resolutions done)."""
        return self.scheduler.cur

    @property
    def meta(self):
        """The attributes of every finished resolution (resumed ones too)."""
        return self.record.meta

    def elapsed(self):
        return self.elapsed_offset + time.perf_counter() - self.start

    def compute_local(self, task, should_stop):
        """A task on the root's compute thread; None if `should_stop()` said so meanwhile."""
        body = self.buffers.get(task)
        with stages.STAGES.timed("kernel") as kernel:
            value = compute_tile(self.plan, task.res, task.tile, self.blocks, body,
                                 self.assembly.scratch, should_stop, 0,
                                 self.crt.work if self.plan.is_crt(task.res) else None)
        task.kernel_s = kernel.cpu  # its thread's CPU, as a worker's
        return value

    # --- scheduling and results ---
    def dispatch(self):
        """Give every worker with room up to DEPTH tasks; True if any was sent. None
        while `backlog` results wait to be applied (memory: each holds its buffer)."""
        sent = False
        if self.collector.pending > self.backlog:
            return sent
        for w in self.scheduler.workers:
            while (task := self.scheduler.assign(w, time.perf_counter())) is not None:
                self.figures.dispatched(task.res, task.started)
                self.endpoints.send(task)
                stages.STAGES.mark("first task sent")
                sent = True
        return sent

    def on_result(self, task, value):
        now = time.perf_counter()
        self.figures.result(task.res, now, task.kernel_s)
        if not self.scheduler.complete(task, now):
            self.buffers.put(task.buf)  # the slower copy of a backed-up task
            return
        self.early[task.res][task.tile.index] = (value, task.buf)
        self._hand_over()

    def _hand_over(self):
        """The current resolution's results to the collector (every one of r before
        any of r + 1); once all its tiles are in, the scheduler moves on while they
        are still being applied, and the next resolution's early results follow."""
        while not self.scheduler.finished and self.early[self.cur]:
            r = self.cur
            early, self.early[r] = sorted(self.early[r].items()), {}
            for t, (value, buf) in early:
                self._hand(r, self.tiles[t], value, buf)
            if self.handed[r] < len(self.tiles):
                return
            self.advance(r)

    def _hand(self, r, tile, value, buf):
        self.handed[r] += 1
        self.collector.put(r, tile, value, buf)

    def advance(self, r):
        """Resolution r has every tile: on to the next; A's planes no later one
        multiplies leave the root's memory."""
        self.scheduler.advance()
        for p in self.a_last.get(r, ()):
            planes.release_plane(self.ea, p)
        if r == 0 and self.crt:  # resolution 1 is out: the residues, beside the layers
            self.crt.start()

    def _apply(self, r, tile, value, buf):
        """(On the collector's thread.) A result of resolution r, in order: [(level, S)]
        of a layer, the tile of C of the CRT resolution, or max |C tile| of a tile a
        worker wrote."""
        if self.ranks_write is not None:
            self.buffers.put(buf)
            return self.ranks_write.tile(r, tile, value)
        if self.plan.is_crt(r):
            return self._apply_crt(r, tile, value, buf)
        logger.debug("lrmpi: result r%d t%d at %.3f s", r + 1, tile.index, self.elapsed())
        done = self.assembly.add(r, tile, value, buf)
        if self.record.tile_in(r, tile, done, self.assembly.tile_of(r, tile)):
            self._finish(r)

    def _finish(self, r):
        C, cmax = self.assembly.finish(r)
        meta, redone = self.record.layered(r, cmax, C)
        # the last layered C stays until the CRT resolution has shown it improves on it
        keep = lambda: self.assembly.release(C)  # noqa: E731
        if self.crt is not None and r == self.plan.layers - 1:
            self.crt.hold(C, meta["bound_abs"], meta["cmax"], keep, users=2)
            keep = self.crt.drop
        if self.writer is None:
            self.record.publish(meta, C, release=keep)
        else:
            sums, bufs = self.assembly.resume_data(r)
            self.record.publish(meta, C, rewritten(C, redone), sums=sums, whole=C,
                                release=lambda: (self.assembly.release(None, bufs), keep()))
        if r == 0:  # resolution 1's sums into the limbs from C_1, on its way to the disk
            self.assembly.settle(C)

    def _apply_crt(self, r, tile, values, buf):
        """A tile of the CRT resolution: its C values, final (no accumulator); `buf`
        None for a tile from the resume data."""
        done = self.crt.add(tile, values)
        if buf is not None:
            self.buffers.put(buf)
        if self.record.tile_in(r, tile, done, self.crt.tile_of(tile)):
            C, cmax = self.crt.finish()
            meta, datasets = self.record.crt_meta(r, C, cmax)
            self.record.publish(meta, C, datasets, whole=C,
                                release=lambda: self.assembly.release(C))

    def _crt_ready(self):
        """Once the scaling exists: tell the workers (CRT), broadcast B in float64 when
        several need each block, and let the scheduler hand out the CRT tasks."""
        if not self.crt or self.crt_sent or not self.crt.ready():
            return
        self.crt_sent = True
        if self.ranks is not None:
            # whole: every column block
            self.ranks.crt(self.crt.setup(self.crt_bcast),
                           [self.lm.B for _ in self.crt_bcast], self.plan.layers)
        self.scheduler.make_available(self.plan.nres)

    # --- the loop ---
    def run(self):
        """root_run: schedule, gather, checkpoint until done or told to stop.
        Returns (status, reason): ("complete", "") or ("deadline", why)."""
        backoff = Backoff()
        try:
            self.start_workers()
            while not self.scheduler.finished or (self.ranks_write and self.ranks_write.pending):
                reason = self.control.stop_reason() if self.control is not None else None
                if reason:
                    return self.stop("deadline", reason)
                self._crt_ready()
                with stages.STAGES.timed("send"):
                    progressed = self.dispatch()
                with stages.STAGES.timed("receive"):
                    for task, value in self.endpoints.poll():
                        self.on_result(task, value)
                        progressed = True
                self.collector.check()
                if self.b_bcasts and all(r.Test() for r in self.b_bcasts):
                    release(self.eb.digits)
                    self.b_bcasts = None
                    stages.STAGES.mark("B's planes released")
                if self.ranks_write is not None:
                    progressed = self.ranks_write.poll() or progressed
                self.endpoints.check(self.scheduler.watch, time.perf_counter(),
                                     self.worker_timeout, task_of)
                if self.writer is not None:
                    self.writer.check()  # e.g. the disk is full: fail now, not later
                with stages.STAGES.timed("idle"):
                    backoff.step(progressed)
            if self.ranks_write is not None:  # a resolution lost: never "complete"
                self.ranks_write.settle(self.ranks.check_error)
            return self.stop("complete")
        except BaseException as exc:
            self.fail(exc)
            raise

    def start_workers(self):
        """JOB to every worker, then B's broadcast planes, most significant first
        (each worker posts the same ones in the same order on JOB), each counted
        once, to the first resolution that uses it."""
        if self.ranks is None:
            return
        write = exps = ()
        if self.ranks_write is not None:
            write = (self.writer.path, self.writer.job_id, self.writer.fsync)
            exps = (self.ea.exps, self.eb.exps)
        first_use = {}
        for r in range(self.cur, self.plan.layers):
            for _, q in self.plan.schedule[r]:
                first_use.setdefault(q, r)
        reqs = self.ranks.start(self.plan.job(self.bcast, write, exps),
                                [(self.eb.digits[q - 1], first_use[q]) for q in self.bcast])
        # every plane of B by broadcast and no compute of its own: once every worker has
        # them, the root never reads B's planes again (64 MB at n = 4096, 1 GB at 16384)
        if not self.computes and set(self.bcast) == set(first_use):
            self.b_bcasts = reqs

    def stop(self, status, reason=""):
        """root_stop: record the status (after every resolution queued for the disk),
        stop the workers (design.md, "Deadlines and signals")."""
        self.collector.drain()  # every result handed over is applied (and published)
        if self.ranks_write is not None:  # seals in flight answered, briefly (design.md)
            self.ranks_write.finish(STOP_SEALING_S)
        layers = self.plan.layers
        if self.crt and self.writer is not None and self.cur == layers \
                and self.crt.done:  # the CRT resolution's finished tiles are resume data
            self.writer.keep_partial(layers + 1, self.crt.partial())
        if self.control is not None:
            self.control.mark(status, reason)
        self.endpoints.stop()
        stages.write_stats(config.get().stats_file, self.ranks.reports if self.ranks else {},
                           [self.figures.of(r) for r in range(self.plan.nres)])
        self.collector.close()
        return status, reason

    def fail(self, exc):
        self.collector.close()
        try:
            if self.ranks_write is not None and isinstance(exc, Exception):
                self.ranks_write.finish()  # listed before the status says failed
            if self.control is not None:
                self.control.mark("failed", f"{type(exc).__name__}: {exc}")
        finally:
            self.endpoints.fail(exc)
