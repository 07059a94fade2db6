"""A task farm: rounds of independent tasks handed to whichever worker is free.

Inference uses it: a round is one resolution, a task a batch of still-active
samples. The root keeps DEPTH tasks queued per worker (so none waits for its
next), computes tasks itself on a thread when it has a core of its own
(ThreadEndpoint), polls without spinning, re-raises a worker's error, names a
worker silent past the hang limit, and stops between tasks when told to. Tasks
and results are small pickled objects (the bulk data, the model and the samples,
reach every rank once, before the first round).
"""
import time
from collections import deque

from lrmpi import config, stages
from lrmpi.errors import RemoteTraceback, WorkerError, WorkerTimeout
from lrmpi.parallel import faults, protocol
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import mpi, next_tag_from_root, rank_size, root_has_a_core
from lrmpi.parallel.endpoints import ThreadEndpoint
from lrmpi.parallel.protocol import FarmResult, FarmTask, Tag
from lrmpi.parallel.scheduler import hang_limit


class Farm:
    """The root side. `compute(payload, stopping)` is what every rank runs for a
    task: it may return None once `stopping()` is true (a stop is on its way), and
    its result is then dropped."""

    def __init__(self, comm, compute, hosts=None, worker_timeout=None):
        self.comm, self.compute, self.hosts = comm, compute, hosts or {}
        self.workers = list(range(1, rank_size(comm)[1]))
        self.local = ThreadEndpoint(self._local) if (not self.workers
                                                     or root_has_a_core(comm)) else None
        self.worker_timeout, self.durations = worker_timeout, []
        self.MPI = mpi() if self.workers else None
        self.sends = []  # requests of task sends still in flight

    def _local(self, task, probe):
        faults.on_task(0)
        t0 = time.perf_counter()
        value = self.compute(task.payload, lambda: probe.Iprobe())
        return None if probe.Iprobe() else FarmResult(task.id, value, time.perf_counter() - t0)

    def round(self, payloads, stop_reason=None):
        """Every payload computed somewhere: their values in order, or None when
        `stop_reason()` said stop first (the tasks still running are abandoned)."""
        todo = deque(FarmTask(i, p) for i, p in enumerate(payloads))
        out, busy = {}, {w: deque() for w in self.workers + ([0] if self.local else [])}
        backoff = Backoff()
        while len(out) < len(payloads):
            if stop_reason is not None and stop_reason():
                return None
            progressed = False
            for w, queue in busy.items():  # keep every rank DEPTH tasks deep
                while todo and len(queue) < config.get().depth:
                    task = todo.popleft()
                    queue.append((task, time.perf_counter()))
                    if w == 0:
                        self.local.send(task)
                    else:  # nonblocking: a blocking send of a large task while
                        # the worker blocks sending its result to us would deadlock
                        self.sends.append(self.comm.isend(task, dest=w, tag=Tag.TASK))
                    progressed = True
            for _, result in (self.local.poll() if self.local else []):
                self._done(busy[0], result, out)
                progressed = True
            if self.workers:
                self.sends = [s for s in self.sends if not s.Test()]
                progressed |= self._receive(busy, out)
            backoff.step(progressed)
        return [out[i] for i in range(len(payloads))]

    def _done(self, queue, result, out):
        for i, (task, started) in enumerate(queue):
            if task.id == result.id:
                del queue[i]
                self.durations.append(time.perf_counter() - started)
                break
        out[result.id] = result.value

    def _receive(self, busy, out):
        status, got = self.MPI.Status(), False
        while self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=self.MPI.ANY_TAG, status=status):
            src, tag = status.Get_source(), status.Get_tag()
            if tag == Tag.ERROR:
                what, tb = protocol.decode_error(self.comm.recv(source=src, tag=Tag.ERROR))
                raise WorkerError(what) from RemoteTraceback(tb)
            if tag != Tag.DONE:
                break
            self._done(busy[src], self.comm.recv(source=src, tag=Tag.DONE), out)
            got = True
        limit = hang_limit(self.durations, self.worker_timeout)
        now = time.perf_counter()
        for w in self.workers:
            if busy[w] and now - busy[w][0][1] > limit:
                raise WorkerTimeout(f"worker {w} of {len(self.workers) + 1} on "
                                    f"{self.hosts.get(w, '?')} did not answer for "
                                    f"{now - busy[w][0][1]:.1f} s (limit {limit:.1f} s)")
        return got

    def stop(self):
        """STOP every worker (results still in flight are dropped), wait for their BYE."""
        if self.local is not None:
            self.local.stop()
        if not self.workers:
            return
        for w in self.workers:
            self.comm.send(None, dest=w, tag=Tag.STOP)
        left, backoff = set(self.workers), Backoff()
        limit = time.time() + config.get().stop_timeout_s
        status = self.MPI.Status()
        while left:
            got = False
            while self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=self.MPI.ANY_TAG,
                                   status=status):
                src, tag = status.Get_source(), status.Get_tag()
                self.comm.recv(source=src, tag=tag)
                if tag == Tag.BYE:
                    left.discard(src)
                got = True
            if time.time() > limit:
                self.comm.Abort(1)
            backoff.step(got)


def serve(comm, compute):
    """A worker: compute TASKs until STOP; errors go to the root, not to the floor."""
    MPI = mpi()
    rank, size = rank_size(comm)
    status, backoff = MPI.Status(), Backoff(cap=5e-3)
    failed = False
    while True:
        tag = next_tag_from_root(comm, status, backoff)
        msg = comm.recv(source=0, tag=tag)
        if tag == Tag.STOP:
            comm.send(0, dest=0, tag=Tag.BYE)
            return 1 if failed else 0
        if tag != Tag.TASK or failed:
            continue
        try:
            faults.on_task(rank)
            t0 = time.perf_counter()
            value = compute(msg.payload, lambda: comm.Iprobe(source=0, tag=Tag.STOP))
            if comm.Iprobe(source=0, tag=Tag.STOP):
                continue  # stopping: the root drops results now
            t1 = time.perf_counter()
            comm.send(FarmResult(msg.id, value, t1 - t0), dest=0, tag=Tag.DONE)
            stages.add("comm", time.perf_counter() - t1)  # wall: a send waits for the root
        except Exception as exc:
            failed = True
            comm.send(protocol.error_message(rank, size, exc), dest=0, tag=Tag.ERROR)
