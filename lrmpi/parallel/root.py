"""The root side of a distributed layered matmul: root_init, root_run, root_stop.

Worked example: `mpirun -n 3`, A and B 4096 x 4096, 4 planes, antidiagonal
order (7 resolutions).

  rank 0 (root) reads and encodes A and B, and cuts C into 8 row tiles of 512
  rows (partition.py). The scheduler hands out tasks (resolution r, tile t),
  lowest r first, DEPTH outstanding per worker (scheduler.py). Each WORK carries
  exactly the plane blocks the worker lacks: task (1, t0) to rank 1 carries A[t0]
  plane 1 and B plane 1; task (2, t0), later, only A[t0] plane 2 and B plane 2 —
  planes travel in significance order, as they are needed.

  ranks 1 and 2 (workers, worker.py) compute the tile's exact level sums with the
  int8 kernels and send them back (protocol.py).

  The root adds each result into the exact accumulator and decodes that tile of
  C_r at once (assembly.py); when all 8 tiles of r are in, it checkpoints C_r and
  logs a line. Results of r+1 that arrive first wait in a buffer, so C_r never
  sees pairs of a later resolution.

With one rank (or without mpi4py) the root computes each task itself through the
same scheduling code, on a thread beside its loop (endpoints.ThreadEndpoint); it
also computes beside the workers when it has a core of its own (ranks on its node
<= cores: `-n 2` on 2 cores), not when ranks outnumber cores (`-n 3` on 2 cores,
where it would take a worker's core). The root never busy-waits: it polls with
MPI_Testsome and sleeps with a Backoff in between.
"""
import sys
import time

import numpy as np

from lrmpi import config
from lrmpi.errors import WorkerTimeout
from lrmpi.log import logger
from lrmpi.numerics import bounds, crt_bound
from lrmpi.numerics.layered import finish_last, sum_dtype
from lrmpi.numerics.schedule import levels, n_levels
from lrmpi.parallel import faults, protocol
from lrmpi.parallel.assembly import Assembly
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import rank_size, root_has_a_core
from lrmpi.parallel.crt_stage import CrtStage
from lrmpi.parallel.endpoints import MpiEndpoints, ThreadEndpoint
from lrmpi.parallel.partition import default_tiling
from lrmpi.parallel.progress import Progress
from lrmpi.parallel.protocol import Operand, Tag
from lrmpi.parallel.ranks_write import RanksWrite
from lrmpi.parallel.scheduler import Scheduler
from lrmpi.parallel.worker import compute, compute_crt


class Root:
    """The root of a layered matmul `lm` (numerics.layered.LayeredMatmul) over `comm`.

    `control` (optional) decides when to stop and records the job's status:
    control.stop_reason() -> str or None, polled between steps, and
    control.mark(status, reason), called before the workers are stopped or the
    job is aborted. `writer`: the checkpoint writer (jobs.checkpoint), or None.
    `resume`: a checkpoint to continue from. `on_resolution(meta, C)` is called
    for each finished resolution (C is reused later: copy what you keep).
    """

    def __init__(self, lm, comm=None, *, writer=None, control=None, resume=None, start=None,
                 on_resolution=None, worker_timeout=None, write="root"):
        self.start = time.perf_counter() if start is None else start
        self.elapsed_offset = 0.0
        self.lm, self.comm, self.writer, self.control = lm, comm, writer, control
        self.on_resolution, self.worker_timeout, self.hosts = on_resolution, worker_timeout, {}
        self.workers = list(range(1, rank_size(comm)[1]))
        # results written by the ranks (ranks_write.py): a fresh job with workers and a
        # checkpoint; a resumed one continues with the root writing
        fresh = resume is None or resume.attrs.get("completed", 0) == 0
        self.ranks = RanksWrite(self) if (write == "ranks" and writer is not None
                                          and self.workers and fresh) else None
        if write == "ranks" and self.ranks is None and writer is not None and self.workers:
            logger.info("lrmpi: a resumed job's results are written by the root")
        self.computes = (not self.workers or root_has_a_core(comm)) and self.ranks is None
        self.ea, self.eb = lm.encode()
        logger.debug("lrmpi: encoded at %.3f s", self.elapsed())
        m, k = self.ea.shape
        self.tiling = default_tiling(m, self.eb.shape[0],
                                     len(self.workers) + (1 if self.computes else 0))
        self.tiles = self.tiling.tiles()
        self.schedule = lm.schedule
        self.layers = len(self.schedule)  # resolutions of digit planes
        # the CRT resolution, if any, is resolution `layers` (0-based): its tasks
        # return their tile of C in float64, one "level" (crt_stage.py)
        self.nres = self.layers + (1 if lm.final == "crt" else 0)
        self.nlevels = [n_levels(r) for r in self.schedule] + [1] * (self.nres - self.layers)
        self.sdtype = [sum_dtype(r, k, lm.bits) for r in self.schedule] + \
            [np.float64] * (self.nres - self.layers)
        # resolution 1's bound now, while the workers wait anyway; each later one
        # when its resolution finishes (all at once before the first dispatch cost
        # 0.1 s at n = 4096; after it, beside busy workers, 0.8 s)
        self.bounds = bounds.Bounds(self.ea, self.eb, self.schedule)
        self.bounds.prepare(0)
        logger.debug("lrmpi: bounds at %.3f s", self.elapsed())
        self.assembly = Assembly(self.ea, self.eb, self.schedule, self.sdtype,
                                 keep_sums=writer is not None)
        self.traffic = [[0, 0] for _ in range(self.nres)]  # bytes sent, received per resolution
        # per resolution: first WORK sent, last RESULT in, kernel seconds (the
        # pipeline's efficiency: kernel time / (workers x that span))
        self.timing = [[None, None, 0.0] for _ in range(self.nres)]
        self.meta, self.cmax = [], []
        self.crt = CrtStage(lm, self.tiling, self.assembly.c_pool) \
            if self.nres > self.layers else None
        first = 0
        if resume is not None and resume.attrs.get("completed", 0) > 0:
            first = self._resume(resume)
        if self.ranks is None:  # with ranks writing, the workers hold the accumulators
            self.assembly.start(first)
        if writer is not None and writer.keep != "all":  # resolution 1's file will go
            self.assembly.c1_is_sums = False
        # rank 0 is a worker too when it computes (its keys are in its memory already)
        self.sched = Scheduler(self.tiles, self.nres,
                               ([0] if self.computes else []) + self.workers, self.keys_for,
                               first, [len(p) for p in self.schedule] +
                               [(lm.moduli or 0) + 1] * (self.nres - self.layers),
                               pinned=self.ranks is not None)
        if self.crt:  # its tasks wait for the residues (computed once the layers run)
            self.sched.available = self.layers
            self.crt_sent = False
            self.crt_bcast = protocol.crt_bcast(lm.moduli, self.tiling, len(self.workers))
            self._held_by_broadcast(Operand.RB, self.crt_bcast)
            if first > 0:
                self.crt.start()
        # B's planes broadcast to every worker (protocol.bcast_planes): the scheduler
        # counts them as held, so they never travel point to point
        self.bcast = protocol.bcast_planes(self.schedule[first:], self.tiling,
                                           len(self.workers))
        self._held_by_broadcast(Operand.B, self.bcast)
        self.mpi = MpiEndpoints(self, comm) if self.workers else None
        self.local = ThreadEndpoint(self.compute_local) if self.computes else None
        self.early = {r: {} for r in range(first, self.nres)}  # results of r > cur
        self.progress = Progress(lm.planned, len(self.tiles))
        if self.crt and first == self.layers and resume is not None:
            self._resume_crt_tiles(resume)

    def _held_by_broadcast(self, op, numbers):
        """Planes (or residues) `numbers` of op reach every worker by broadcast, whole:
        the scheduler counts each of their column blocks as held, never to send."""
        for w in self.workers:
            self.sched.have[w].update((op, cb, q) for q in numbers
                                      for cb in range(self.tiling.col_blocks))

    def _resume(self, ckpt):
        """Continue after the checkpoint's last resolution, from its exact state: the
        level sums of every completed resolution, added again. Returns it (0-based
        index of the next resolution)."""
        c = int(ckpt.attrs["completed"])
        shape = self.assembly.shape

        def sums_of(i):
            if ckpt.has_sums(i):
                return ckpt.sums(i, shape, levels(self.schedule[i - 1]))
            # resolution 1 was its own resume data (decoded exactly from its sums)
            return self.assembly.sums_from_c(ckpt.resolution(1)[1]["C"])
        self.assembly.resume(c, sums_of)
        for i in range(1, c + 1):
            self.meta.append(ckpt.resolution_summary(i))
            self.cmax.append(float(self.meta[-1]["cmax"]))
        self.elapsed_offset = float(self.meta[-1]["elapsed_s"])
        self.start = time.perf_counter()
        return c

    @property
    def cur(self):
        """0-based index of the resolution being completed (= resolutions done)."""
        return self.sched.cur

    def elapsed(self):
        return self.elapsed_offset + time.perf_counter() - self.start

    # --- what the endpoints ask of the root ---
    def _resume_crt_tiles(self, ckpt):
        """The tiles a stopped CRT resolution finished (resume data): kept, not
        computed again."""
        got = ckpt.partial(self.layers + 1, self.assembly.shape)
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
        self.sched.preload(self.layers, [t.index for t in done])
        for t in done:
            self._apply_crt(self.layers, t, [(protocol.CRT_LEVEL, C[t.r0:t.r1, t.c0:t.c1])],
                            None)
        logger.info("lrmpi: resuming the CRT resolution with %d of %d tiles done",
                    len(done), len(self.tiles))

    def keys_for(self, res, tile):
        if res == self.layers:
            return self.crt.keys(tile)
        pairs = self.schedule[res]
        return ({(Operand.A, tile.rb, p) for p, _ in pairs}
                | {(Operand.B, tile.cb, q) for _, q in pairs})

    def plane_block(self, op, block, plane):
        if op in (Operand.RA, Operand.RB):
            return self.crt.block(op, block, plane)
        if op == Operand.A:
            r0, r1 = self.tiling.rows(block)
            return self.ea.digits[plane - 1, r0:r1]
        c0, c1 = self.tiling.cols(block)
        return self.eb.digits[plane - 1, c0:c1]

    def result_buffer(self, task):
        r = task.res
        return self.assembly.scratch.get(
            (protocol.result_size(self.nlevels[r], task.tile.shape, self.sdtype[r]),),
            np.int64)

    def decode(self, task):
        tid, sums, task.kernel_s = protocol.decode_result(task.buf, task.tile.shape,
                                                          self.sdtype[task.res])
        if tid != task.id:
            raise RuntimeError(f"worker {task.worker} answered task {tid}, expected {task.id}")
        return sums

    def count(self, res, sent=0, received=0):
        self.traffic[res][0] += sent
        self.traffic[res][1] += received

    def compute_local(self, task, probe):
        """A task on the root's compute thread; None if `probe` says stop meanwhile."""
        faults.on_task(0)
        t, r = task.tile, task.res
        task.buf = self.result_buffer(task)
        body = protocol.result_body(task.buf, self.nlevels[r], t.shape, self.sdtype[r])
        t0 = time.perf_counter()
        if r == self.layers:
            sums = compute_crt(probe, 0, _RootPlanes(self), t, self.crt.setup(), body[0],
                               self.assembly.scratch)
        else:
            sums = compute(probe, 0, _RootPlanes(self), t, self.schedule[r], self.lm.bits,
                           body, self.assembly.scratch)
        task.kernel_s = time.perf_counter() - t0
        return sums

    # --- scheduling and results ---
    def dispatch(self):
        """Give every worker with room up to DEPTH tasks; True if any was sent."""
        sent = False
        for w in self.sched.workers:
            while (task := self.sched.assign(w, time.perf_counter())) is not None:
                if self.timing[task.res][0] is None:
                    self.timing[task.res][0] = task.started
                (self.local if w == 0 else self.mpi).send(task)
                sent = True
        return sent

    def poll(self):
        """Results from the root's own compute and from the workers."""
        return (self.local.poll() if self.local else []) + (self.mpi.poll() if self.mpi else [])

    def on_result(self, task, sums):
        now = time.perf_counter()
        self.timing[task.res][1] = now
        self.timing[task.res][2] += task.kernel_s
        if not self.sched.complete(task, now):
            self.assembly.scratch.put(task.buf)  # the slower copy of a backed-up task
        elif task.res > self.cur:
            self.early[task.res][task.tile.index] = (sums, task.buf)
        else:
            self._apply(task.res, task.tile, sums, task.buf)

    def _apply(self, r, tile, sums, buf):
        if isinstance(sums, protocol.Written):
            return self.ranks.tile(r, tile, sums.amax, buf)
        if r == self.layers:
            return self._apply_crt(r, tile, sums, buf)
        logger.debug("lrmpi: result r%d t%d at %.3f s", r + 1, tile.index, self.elapsed())
        done = self.assembly.add(r, tile, sums, buf)
        if self._tile_in(r, tile, done, self.assembly.tile_of(r, tile)):
            self._finish(r)
            self.advance(r)

    def _tile_in(self, r, tile, done, values):
        """A decoded tile of r (the done-th): streamed to the disk while the rest
        computes; True when it was r's last."""
        if self.writer is not None:
            if done == 1:
                self.writer.begin_resolution(r + 1, self.assembly.shape)
            self.writer.write_tile(r + 1, tile.r0, tile.c0, values)
        self.progress.tile(r, done, self.elapsed())
        return done == len(self.tiles)

    def advance(self, r):
        """Resolution r has every tile: on to the next, and its results that came early."""
        self.sched.advance()
        if r == 0 and self.crt:  # resolution 1 is out: the residues, beside the layers
            self.crt.start()
        nxt = r + 1
        if nxt < self.nres:
            # results of r+1 that came early; applying them may finish r+1 too
            # (and so on), which advances the scheduler inside this loop
            early, self.early[nxt] = sorted(self.early[nxt].items()), {}
            for t, (s, b) in early:
                self._apply(nxt, self.tiles[t], s, b)

    def _finish(self, r):
        C, cmax = self.assembly.finish(r)
        self.cmax.append(cmax)
        babs = self.bounds.upto(self.cmax)
        redone = ()
        if r == len(self.schedule) - 1:  # entries beyond the planes' reach (fallback.py)
            redone, babs[-1] = finish_last(self.lm, self.ea, self.eb, self.bounds, C,
                                           self.cmax, babs)
        meta = self.resolution_meta(r, babs, redone)
        # the last layered C stays until the CRT resolution has shown it improves on it
        keep = lambda: self.assembly.release(C)  # noqa: E731
        if self.crt is not None and r == self.layers - 1:
            self.crt.hold(C, float(babs[r]), self.cmax[-1], keep, users=2)
            keep = self.crt.drop
        if self.writer is None:
            self.publish(meta, C, release=keep)
            return
        sums, bufs = self.assembly.resume_data(r)
        self.publish(meta, C, _rewritten(C, redone), sums=sums, whole=C,
                     release=lambda: (self.assembly.release(None, bufs), keep()))

    def decode_layers(self):
        """(C, bound_abs, max |C|) of the last layered resolution of a resumed job, for
        the CRT rule: decoded again from the exact state after the layers, fallback
        included (the same bits as when it was finished)."""
        C = np.empty(self.assembly.shape)
        self.assembly.acc.decode(self.ea.exps, self.eb.exps, out=C)
        cmax = list(self.cmax[:self.layers])
        _, babs = finish_last(self.lm, self.ea, self.eb, self.bounds, C, cmax,
                              self.bounds.upto(cmax))
        return C, float(babs), cmax[-1]

    def publish(self, meta, C, datasets=None, release=None, **write):
        """A finished resolution: recorded, given to on_resolution, queued for the disk
        (`write`: add_resolution's sums, virtual or whole). `release()` runs once C and the
        buffers are no longer needed (at once without a checkpoint)."""
        self.meta.append(meta)
        if self.on_resolution is not None:
            self.on_resolution(meta, C)
        if self.writer is None:
            self.progress.resolution(meta)
            if release is not None:
                release()
            return
        self.writer.add_resolution(meta["index"], datasets or {}, meta,
                                   done=lambda durable: self.progress.resolution(meta, durable),
                                   release=release, **write)

    def resolution_meta(self, r, babs, redone=()):
        """The attributes of layered resolution r (self.cmax holds its max |C|)."""
        rel = float(bounds.bound_rel(babs, self.cmax)[-1])
        return {"index": r + 1, "pairs": sum(len(x) for x in self.schedule[:r + 1]),
                "method": "planes", "products": len(self.schedule[r]),
                "bound_abs": float(babs[r]), "bound_rel": rel, "cmax": self.cmax[-1],
                "fallback": len(redone[0]) if redone else 0, **self._figures(r)}

    def crt_meta(self, r, C, cmax):
        """The CRT resolution r once its C is whole (max |C| = cmax): the fallback and
        the rule that it never replaces a better layered result (crt_bound.finish, C
        changed in place). Its attributes, and the rows of C to write again."""
        history = [m["bound_abs"] for m in self.meta[:self.layers]]
        b, cmax, redone, method = crt_bound.finish(
            self.lm, self.ea, self.eb, self.crt.ops, C, cmax,
            lambda: self.crt.layers_result(self.decode_layers))
        self.crt.drop()
        self.cmax.append(cmax)
        meta = {"index": r + 1, "pairs": sum(len(x) for x in self.schedule),
                "method": method, "products": self.crt.products, "bound_abs": b,
                "bound_rel": float(bounds.bound_rel([*history, b], self.cmax)[-1]),
                "cmax": cmax, "fallback": len(redone[0]) if redone else 0, **self._figures(r)}
        return meta, _rewritten(C, redone, method == "planes")

    def _figures(self, r):
        first, last, kernel = self.timing[r]
        return {"elapsed_s": self.elapsed(),
                "root_bytes_sent": self.traffic[r][0], "root_bytes_recv": self.traffic[r][1],
                "kernel_s": kernel, "span_s": (last - first) if first is not None else 0.0,
                "workers": len(self.sched.workers)}

    def _apply_crt(self, r, tile, sums, buf):
        """A tile of the CRT resolution: its C values, final (no accumulator)."""
        (_, values), = sums
        done = self.crt.add(tile, values)
        if buf is not None:
            self.assembly.scratch.put(buf)
        if self._tile_in(r, tile, done, self.crt.tile_of(tile)):
            self._finish_crt(r)
            self.advance(r)

    def _finish_crt(self, r):
        C, cmax = self.crt.finish()
        meta, datasets = self.crt_meta(r, C, cmax)
        self.publish(meta, C, datasets, whole=C, release=lambda: self.assembly.release(C))

    def _crt_ready(self):
        """Once the residues exist: tell the workers (CRT), broadcast B's, and let the
        scheduler hand out the CRT resolution's tasks."""
        if not self.crt or self.crt_sent or not self.crt.ready():
            return
        self.crt_sent = True
        if self.workers:
            setup = self.crt.setup(self.crt_bcast)
            for w in self.workers:  # nonblocking: a busy worker reads it after its task
                self.mpi.sends.append(self.comm.isend(setup, dest=w, tag=Tag.CRT))
            for l in self.crt_bcast:
                block = self.crt.ops.RB[l]  # whole: every column block
                self.mpi.sends.append(self.comm.Ibcast(block, root=0))
                self.count(self.layers, sent=block.nbytes)
        self.sched.available = self.nres

    # --- the loop ---
    def run(self):
        """root_run: schedule, gather, checkpoint until done or told to stop.
        Returns (status, reason): ("complete", "") or ("deadline", why)."""
        backoff = Backoff()
        try:
            self.start_workers()
            while not self.sched.finished or (self.ranks and self.ranks.pending):
                reason = self.control.stop_reason() if self.control is not None else None
                if reason:
                    return self.stop("deadline", reason)
                self._crt_ready()
                progressed = self.dispatch()
                for task, sums in self.poll():
                    self.on_result(task, sums)
                    progressed = True
                if self.ranks is not None:
                    progressed = self.ranks.poll() or progressed
                if self.workers:
                    self.mpi.check_error()
                    self.check_hung()
                if self.writer is not None:
                    self.writer.check()  # e.g. the disk is full: fail now, not later
                backoff.step(progressed)
            return self.stop("complete")
        except BaseException as exc:
            self.fail(exc)
            raise

    def start_workers(self):
        write = exps = ()
        if self.ranks is not None:
            write = (self.writer.path, self.writer.job_id, self.writer.fsync)
            exps = (self.ea.exps, self.eb.exps)
        msg = protocol.job_message(self.lm.bits, self.lm.planes, self.ea.shape[1],
                                   self.schedule, self.tiling, self.bcast, self.lm.moduli or 0,
                                   write, exps)
        for w in self.workers:
            self.comm.send(msg, dest=w, tag=Tag.JOB)
        self.hosts = {w: self.comm.recv(source=w, tag=Tag.HELLO) for w in self.workers}
        # every broadcast posted now, most significant first (each worker posts the
        # same ones in the same order on JOB); MPICH broadcasts messages this large
        # as scatter + allgather, so the root sends each byte about once: counted
        # once, to the first resolution that uses the plane
        first_use = {}
        for r in range(self.cur, len(self.schedule)):
            for _, q in self.schedule[r]:
                first_use.setdefault(q, r)
        for q in self.bcast:
            plane = self.eb.digits[q - 1]
            self.mpi.sends.append(self.comm.Ibcast(plane, root=0))
            self.count(first_use[q], sent=plane.nbytes)

    def check_hung(self):
        """WorkerTimeout if a worker has sat on its current task far too long."""
        hung = self.sched.hung(time.perf_counter(), self.worker_timeout)
        if hung is not None:
            w, task, running, limit = hung
            raise WorkerTimeout(
                f"worker {w} of {len(self.workers) + 1} on {self.hosts.get(w, '?')} "
                f"did not answer for {running:.1f} s (task of resolution {task.res + 1}, "
                f"tile {task.tile.index}; limit {limit:.1f} s)")

    def stop(self, status, reason=""):
        """root_stop: record the status (after every resolution queued for the disk),
        stop the workers."""
        if self.crt and self.writer is not None and self.cur == self.layers \
                and self.crt.done:  # the CRT resolution's finished tiles are resume data
            self.writer.keep_partial(self.layers + 1, self.crt.partial())
        if self.control is not None:
            self.control.mark(status, reason)
        self._stop_all()
        return status, reason

    def _stop_all(self):
        if self.local is not None:
            self.local.stop()
        if self.workers:
            self.mpi.stop(self.workers, config.get().stop_timeout_s, self.hosts)
            if self.ranks is not None:
                self.ranks.drain()

    def fail(self, exc):
        try:
            if self.control is not None:
                self.control.mark("failed", f"{type(exc).__name__}: {exc}")
        finally:
            if isinstance(exc, WorkerTimeout):  # it will never say BYE: end the job now
                sys.stderr.write(f"lrmpi: error: {exc}\n")
                sys.stderr.flush()
                self.comm.Abort(1)
            try:
                self._stop_all()
            except Exception:  # the job is failing anyway: make sure it ends
                if self.workers:
                    self.comm.Abort(1)


def _rewritten(C, redone, whole=False):
    """The rows of C to write again after they were streamed: those the fallback
    changed (`redone`), or all of them."""
    if whole:
        return {"C": [(np.s_[:], C)]}
    return {"C": [(int(i), C[i]) for i in np.unique(redone[0])]} if redone else {}


class _RootPlanes:
    """The root's planes as worker.compute reads a worker's received blocks."""

    def __init__(self, root):
        self.root = root

    def __getitem__(self, key):
        return self.root.plane_block(*key)
