"""How the root reaches the ranks that compute, for every job kind: tasks out,
results in, errors, hung workers, and the end of a job.

`ThreadEndpoint` runs tasks in the root's own process on a thread (one rank: the
same scheduling code computes everything; or beside the workers when the root has
a core of its own). `WorkerRanks` is the root's side of the worker ranks: sends in
flight, ERROR reports, the hang check and the one STOP/BYE handshake; its
subclasses send one kind of task (MatmulRanks here, farm.FarmRanks). `Endpoints`
joins the two and holds the one failure path. The root polls and sleeps in between,
it never spins in MPI.
"""
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from lrmpi import config
from lrmpi.errors import ProtocolError, RemoteTraceback, WorkerError, WorkerTimeout
from lrmpi.parallel import protocol
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import testsome, waitall


CHECK_EVERY = 0.01  # s between the probes for ERROR reports and hung workers


class ThreadEndpoint:
    """The root's own compute, on one thread beside its loop: the kernels release the
    GIL, so the loop keeps polling MPI, signals and the clock while a task runs.
    `compute(task, should_stop)` returns the task's value, or None when should_stop()
    became true meanwhile (set by stop(): the task ends between column chunks)."""

    def __init__(self, compute):
        self.compute, self.running = compute, deque()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lrmpi-root-compute")
        self.stopping = False

    def send(self, task):
        self.running.append((task, self.pool.submit(self.compute, task,
                                                    lambda: self.stopping)))

    def poll(self):
        """[(task, value)] of the tasks finished, in order."""
        out = []
        while self.running and self.running[0][1].done():
            task, future = self.running.popleft()
            value = future.result()  # re-raises what the task raised
            if value is not None:
                out.append((task, value))
        return out

    def stop(self):
        self.stopping = True
        self.pool.shutdown(wait=True)


class WorkerRanks:
    """The root's side of ranks 1..size-1 of `comm` (`hosts`: rank -> host name).

    Subclasses send tasks (send(task)) and return [(task, value)] of the results
    that came in from _results(), counting them in `received`."""

    def __init__(self, comm, hosts=None):
        self.comm, self.size = comm, comm.Get_size()
        self.workers = list(range(1, self.size))
        self.hosts = dict(hosts or {})
        self.sends = []      # requests of sends in flight (their buffers stay alive in them)
        self.received = {w: 0 for w in self.workers}  # results per worker
        self.reports = {}    # worker -> its report with BYE (stages.Stages.report)
        self.checked = float("-inf")  # when check() last probed

    def name(self, w):
        return f"worker {w} of {self.size} on {self.hosts.get(w, '?')}"

    def poll(self):
        if self.sends:  # retire finished sends so the list stays short: one MPI call
            done = set(testsome(self.sends))
            if done:
                self.sends = [s for i, s in enumerate(self.sends) if i not in done]
        return self._results()

    def _results(self):
        return []

    def _cancel(self):
        """After BYE: receives posted for results that will not come."""

    def stoppable(self, exc):
        """Whether the workers can still be stopped by the handshake after `exc`: not
        when one is hung (it will never say BYE)."""
        return not isinstance(exc, WorkerTimeout)

    def check_error(self):
        """WorkerError for a worker's ERROR report, its traceback attached."""
        error = protocol.poll_error(self.comm)
        if error is not None:
            raise WorkerError(error[0]) from RemoteTraceback(error[1])

    def check(self, watch, now, timeout=None, describe=None):
        """WorkerError for a worker's ERROR report; WorkerTimeout naming a worker that
        sat on its task longer than the hang limit (`watch`: a scheduler.Watch;
        `describe(task)`: what the message says of the task). At most every
        CHECK_EVERY seconds: each probe drives MPI progress, a cost the loop pays
        thousands of times a job."""
        if now - self.checked < CHECK_EVERY:
            return
        self.checked = now
        self.check_error()
        hung = watch.hung(now, timeout)
        if hung is not None:
            w, task, running, limit = hung
            what = describe(task) + "; " if describe is not None else ""
            raise WorkerTimeout(f"{self.name(w)} did not answer for {running:.1f} s "
                                f"({what}limit {limit:.1f} s)")

    def stop(self, timeout):
        """STOP every worker; collect the results each says it sent (BYE); end the job
        if they do not within `timeout` seconds."""
        for w in self.workers:
            self.sends.append(protocol.send_stop(self.comm, w))
        byes, limit, backoff = {}, time.time() + timeout, Backoff()
        while True:
            progressed = bool(self.poll())
            while (bye := protocol.poll_bye(self.comm)) is not None:
                byes[bye[0]], self.reports[bye[0]] = bye[1], bye[2]
                progressed = True
            while protocol.poll_error(self.comm) is not None:
                pass  # the job is ending anyway
            if len(byes) == len(self.workers) and \
                    all(self.received[w] >= byes[w] for w in self.workers):
                break
            if time.time() > limit:
                silent = [self.name(w) for w in self.workers
                          if w not in byes or self.received[w] < byes[w]]
                sys.stderr.write(f"lrmpi: error: {', '.join(silent)} did not stop within "
                                 f"{timeout:.0f} s (hung?); ending the job\n")
                sys.stderr.flush()
                self.comm.Abort(1)
            backoff.step(progressed)
        self._cancel()
        waitall(self.sends)
        self.sends = []


class Endpoints:
    """Where tasks run: the root's thread (`local`, rank 0) and the worker ranks
    (`ranks`); either may be None."""

    def __init__(self, local, ranks):
        self.local, self.ranks = local, ranks

    def send(self, task):
        (self.local if task.worker == 0 else self.ranks).send(task)

    def poll(self):
        """[(task, value)] of the results that came in."""
        return (self.local.poll() if self.local else []) + \
            (self.ranks.poll() if self.ranks else [])

    def check(self, watch, now, timeout=None, describe=None):
        if self.ranks is not None:
            self.ranks.check(watch, now, timeout, describe)

    def stop(self):
        if self.local is not None:
            self.local.stop()
        if self.ranks is not None:
            self.ranks.stop(config.get().stop_timeout_s)

    def fail(self, exc):
        """The job fails with `exc`: when the workers cannot be stopped (a hung worker
        will never say BYE) the job ends now, naming the error; otherwise the workers
        are stopped as usual, and the job ends if even that fails."""
        if self.ranks is not None and not self.ranks.stoppable(exc):
            sys.stderr.write(f"lrmpi: error: {exc}\n")
            sys.stderr.flush()
            self.ranks.comm.Abort(1)
        try:
            self.stop()
        except Exception:
            if self.ranks is not None:
                self.ranks.comm.Abort(1)


class ResultBuffers:
    """The root's buffers for results in flight (from `pool`, a ScratchPool), shaped
    by the Plan, and their decoding."""

    def __init__(self, plan, pool):
        self.plan, self.pool = plan, pool

    def get(self, task):
        """A result buffer for `task` (task.buf); returns its body to compute into."""
        nlevels, dtype = self.plan.layout(task.res)
        task.buf, body = protocol.result_buffers(self.pool, nlevels, task.tile.shape, dtype)
        return body

    def decode(self, task):
        """The value of the RESULT received into task.buf (task.kernel_s set)."""
        _, dtype = self.plan.layout(task.res)
        tid, value, task.kernel_s = protocol.decode_result(
            task.buf, self.plan.result_kind(task.res), task.tile.shape, dtype)
        if tid != task.id:
            raise ProtocolError(f"worker {task.worker} answered task {tid}, expected {task.id}")
        return value

    def put(self, buf):
        self.pool.put(buf)


class MatmulRanks(WorkerRanks):
    """The worker ranks of a layered matmul: WORK with the plane blocks a worker lacks
    (from `blocks`, a tilework.RootBlocks), one nonblocking RESULT receive per
    outstanding task (completed with MPI_Testsome) into `buffers` (ResultBuffers);
    bytes counted in `figures` (progress.Figures)."""

    def __init__(self, comm, blocks, buffers, figures):
        super().__init__(comm)
        self.blocks, self.buffers, self.figures = blocks, buffers, figures
        self.pending = []    # tasks with a posted result receive
        self.state = "idle"  # -> "starting" (JOB sent) -> "running" (broadcasts posted)

    def start(self, job, bcasts):
        """JOB to every worker, their HELLOs (host names), then the broadcasts
        [(array, resolution it is counted to)] posted in order (their requests are
        returned)."""
        self.state = "starting"
        for w in self.workers:
            protocol.send_job(self.comm, w, job)
        hosts, backoff = {}, Backoff()
        while len(hosts) < len(self.workers):  # or a worker's ERROR (it cannot read JOB)
            for w in self.workers:
                if w not in hosts and (host := protocol.poll_hello(self.comm, w)) is not None:
                    hosts[w] = host
            self.check_error()
            backoff.step(False)
        self.hosts = hosts
        reqs = self.broadcast(bcasts)
        self.state = "running"
        return reqs

    def stoppable(self, exc):
        """Not while starting: the workers that read JOB wait for broadcasts the root
        has not posted (and a worker that could not read it posts none)."""
        return super().stoppable(exc) and self.state != "starting"

    def stop(self, timeout):
        if self.state == "idle":  # no JOB went out: the workers wait for one, no BYE
            protocol.release(self.comm)
            return
        super().stop(timeout)

    def broadcast(self, bcasts):
        """Whole planes (or residues) to every worker, [(array, resolution)]: MPICH
        broadcasts messages this large as scatter + allgather, so the root sends each
        byte about once, counted once."""
        reqs = []
        for array, res in bcasts:
            reqs.append(protocol.post_bcast(self.comm, array))
            self.figures.count(res, sent=array.nbytes)
        self.sends += reqs
        return reqs

    def crt(self, setup, bcasts, res):
        """The CRT resolution's setup to every worker, then B's residues broadcast."""
        for w in self.workers:
            self.sends.append(protocol.send_crt(self.comm, w, setup))
        self.broadcast([(a, res) for a in bcasts])

    def send(self, task):
        self.sends.append(protocol.send_work(self.comm, task.worker, task.id, task.res,
                                             task.tile.index, task.keys))
        for key in task.keys:
            block = self.blocks[key]
            self.figures.count(task.res, sent=block.nbytes)
            self.sends.append(protocol.send_plane(self.comm, task.worker, block))
        self.buffers.get(task)
        task.req = protocol.post_result(self.comm, task.worker, task.buf)
        self.pending.append(task)

    def _results(self):
        if not self.pending:
            return []
        out = []
        for i in sorted(testsome([t.req for t in self.pending]), reverse=True):
            task = self.pending.pop(i)
            self.received[task.worker] += 1
            self.figures.count(task.res, received=protocol.result_nbytes(task.buf))
            out.append((task, self.buffers.decode(task)))
        return out

    def seal(self, res):
        """SEAL resolution res on every worker (results written by the ranks)."""
        for w in self.workers:
            self.sends.append(protocol.send_seal(self.comm, w, res))

    def sealed(self):
        """[(worker, (res, file name or None, tiles))] of the SEALED answers waiting."""
        out = []
        while (got := protocol.poll_sealed(self.comm)) is not None:
            out.append(got)
        return out

    def _cancel(self):
        for task in self.pending:  # tasks a worker skipped after STOP: cancel the receives
            task.req.Cancel()
        waitall([t.req for t in self.pending])
        self.pending = []
        # SEALED answers of resolutions the job no longer finishes: received so that
        # no later job on this communicator mistakes them for its own
        self.sealed()


def task_of(task):
    """A matmul task as a hung worker's message names it (check's `describe`)."""
    return f"task of resolution {task.res + 1}, tile {task.tile.index}"
