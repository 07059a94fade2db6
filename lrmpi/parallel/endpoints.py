"""How the root reaches its workers: tasks out, results in, errors and stops.

`ThreadEndpoint` runs tasks in the root's own process on a thread (one rank: the
same scheduling code computes everything; or beside the workers when the root has
a core of its own); `MpiEndpoints` posts nonblocking sends of
work and plane blocks and one nonblocking receive per outstanding task, and
completes them with MPI_Testsome (the root polls and sleeps in between, it never
spins in MPI).
"""
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from lrmpi.errors import RemoteTraceback, WorkerError
from lrmpi.parallel import protocol
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import mpi
from lrmpi.parallel.protocol import Tag


class ThreadEndpoint:
    """The root's own compute, on one thread beside its loop: the kernels release the
    GIL, so the loop keeps polling MPI, signals and the clock while a task runs, and
    `stopping` (set by the loop) ends a task between column chunks."""

    def __init__(self, compute):
        self.compute, self.running = compute, deque()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lrmpi-root-compute")
        self.stopping = False

    def send(self, task):
        self.running.append((task, self.pool.submit(self.compute, task, self)))

    def poll(self):
        out = []
        while self.running and self.running[0][1].done():
            task, future = self.running.popleft()
            sums = future.result()  # re-raises what the task raised
            if sums is not None:
                out.append((task, sums))
        return out

    def Iprobe(self, source=None, tag=None):
        """worker.compute asks between chunks whether to stop (as it asks MPI)."""
        return self.stopping

    def stop(self):
        self.stopping = True
        self.pool.shutdown(wait=True)


class MpiEndpoints:
    """Nonblocking sends of work and receives of results, one per outstanding task.

    `root` provides plane_block(op, block, plane), result_buffer(task),
    decode(task) -> level sums, and count(res, sent, received) for the traffic
    counters.
    """

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
            r.count(task.res, sent=arr.nbytes)
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
            self.root.count(task.res, received=protocol.result_nbytes(task.buf))
            out.append((task, self.root.decode(task)))
        return out

    def check_error(self):
        """A worker's ERROR report, raised as WorkerError."""
        status = self.MPI.Status()
        if self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=Tag.ERROR, status=status):
            what, tb = protocol.decode_error(self.comm.recv(source=status.Get_source(),
                                                            tag=Tag.ERROR))
            raise WorkerError(what) from RemoteTraceback(tb)

    def stop(self, workers, timeout, hosts):
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
                silent = [f"worker {w} of {size} on {hosts.get(w, '?')}"
                          for w in workers if w not in byes or self.received[w] < byes[w]]
                sys.stderr.write(f"lrmpi: error: {', '.join(silent)} did not stop within "
                                 f"{timeout:.0f} s (hung?); ending the job\n")
                sys.stderr.flush()
                self.comm.Abort(1)
            backoff.step(progressed)
        for task in self.pending:  # tasks a worker skipped after STOP: cancel the receives
            task.req.Cancel()
        self.MPI.Request.Waitall([t.req for t in self.pending] + self.sends)
        self.pending, self.sends = [], []
