"""A task farm: rounds of independent tasks handed to whichever worker is free.

Inference uses it: a round is one resolution, a task a batch of still-active
samples. The root keeps DEPTH tasks queued per worker (so none waits for its
next), computes tasks itself on a thread when it has a core of its own
(endpoints.ThreadEndpoint), polls without spinning, re-raises a worker's error, names a
worker silent past the hang limit, and stops between tasks when told to. Tasks
and results are small pickled objects (the bulk data, the model and the samples,
reach every rank once, before the first round; design.md, "Inference"). The workers run worker.serve,
the loop every job kind shares, with a FarmWorker.
"""
import time
from collections import deque
from dataclasses import dataclass

from lrmpi import config, stages
from lrmpi.errors import ProtocolError
from lrmpi.parallel import faults, protocol, worker
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import rank_size, root_has_a_core
from lrmpi.parallel.endpoints import Endpoints, ThreadEndpoint, WorkerRanks
from lrmpi.parallel.messages import FarmResult, FarmTask
from lrmpi.parallel.scheduler import Watch


@dataclass
class _Sent:
    """A task handed to a rank (the hang check's record of it)."""
    id: int
    payload: object
    worker: int
    started: float
    weight: float = 1.0


class Farm:
    """The root side. `compute(payload, stopping)` is what every rank runs for a
    task: it may return None once `stopping()` is true (a stop is on its way), and
    its result is then dropped."""

    def __init__(self, comm, compute, hosts=None, worker_timeout=None):
        self.compute, self.worker_timeout = compute, worker_timeout
        workers = rank_size(comm)[1] > 1
        local = ThreadEndpoint(self._local) if not workers or root_has_a_core(comm) else None
        self.endpoints = Endpoints(local, FarmRanks(comm, hosts) if workers else None)
        self.ranks = ([0] if local else []) + (self.endpoints.ranks.workers if workers else [])
        self.watch = Watch(self.ranks)

    @property
    def workers(self):
        """The worker ranks (rank 0 not counted)."""
        return [w for w in self.ranks if w != 0]

    @property
    def local(self):
        return self.endpoints.local

    def _local(self, task, should_stop):
        faults.on_task(0)
        t0 = time.perf_counter()
        value = self.compute(task.payload, should_stop)
        return None if should_stop() else FarmResult(task.id, value, time.perf_counter() - t0)

    def round(self, payloads, stop_reason=None):
        """Every payload computed somewhere: their values in order, or None when
        `stop_reason()` said stop first (the tasks still running are abandoned)."""
        todo = deque(enumerate(payloads))
        out, backoff = {}, Backoff()
        while len(out) < len(payloads):
            if stop_reason is not None and stop_reason():
                return None
            progressed = False
            for w, queue in self.watch.outstanding.items():  # keep every rank DEPTH deep
                while todo and len(queue) < config.get().depth:
                    task = _Sent(*todo.popleft(), w, time.perf_counter())
                    self.watch.add(task)
                    self.endpoints.send(task)
                    progressed = True
            for task, result in self.endpoints.poll():
                self.watch.done(task, time.perf_counter())
                out[result.id] = result.value
                progressed = True
            self.endpoints.check(self.watch, time.perf_counter(), self.worker_timeout)
            backoff.step(progressed)
        return [out[i] for i in range(len(payloads))]

    def stop(self):
        """STOP every worker (results still in flight are dropped), wait for their BYE."""
        self.endpoints.stop()

    def fail(self, exc):
        """The job fails with `exc` (endpoints.Endpoints.fail)."""
        self.endpoints.fail(exc)


class FarmRanks(WorkerRanks):
    """The worker ranks of a farm: TASK out (nonblocking), DONE in."""

    def __init__(self, comm, hosts=None):
        super().__init__(comm, hosts)
        self.pending = {}  # task id -> _Sent

    def send(self, task):
        self.pending[task.id] = task
        self.sends.append(protocol.send_task(self.comm, task.worker,
                                             FarmTask(task.id, task.payload)))

    def _results(self):
        out = []
        while (got := protocol.poll_done(self.comm)) is not None:
            src, result = got
            self.received[src] += 1
            out.append((self.pending.pop(result.id), result))
        return out


class FarmWorker:
    """A farm's tasks on a worker (worker.serve's handler): TASK in, DONE out."""

    started = True  # the root waits for a BYE from every farm worker

    def __init__(self, comm, compute):
        self.comm, self.compute = comm, compute
        self.rank = rank_size(comm)[0]

    def should_stop(self):
        return protocol.stop_waiting(self.comm)

    def handle(self, task, failed):
        if not isinstance(task, FarmTask):
            raise ProtocolError(f"a farm worker received a {type(task).__name__}")
        if failed:
            return 0
        faults.on_task(self.rank)
        t0 = time.perf_counter()
        value = self.compute(task.payload, self.should_stop)
        if self.should_stop():
            return 0  # stopping: the root drops results now
        t1 = time.perf_counter()
        protocol.send_done(self.comm, FarmResult(task.id, value, t1 - t0))
        stages.add("comm", time.perf_counter() - t1)  # wall: a send waits for the root
        return 1

    def stop(self):
        pass


def serve(comm, compute):
    """A worker: compute TASKs until STOP; errors go to the root, not to the floor."""
    return worker.serve(comm, FarmWorker(comm, compute))
