"""The few collectives of a data-parallel job (inference), also for one process
without MPI, and a gather whose root polls and names a silent rank."""
import time

from lrmpi.errors import WorkerTimeout
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import rank_size
from lrmpi.parallel.protocol import Tag


class Group:
    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = rank_size(comm)

    def meet(self):
        """Every rank here before a collective the root enters late (after reading
        and preparing the inputs): the others wait sleeping, not spinning inside
        MPI_Bcast on the cores the root needs meanwhile (3 ranks on 2 cores: the
        broadcast of a model and its data took 3.2 s of wall time that way)."""
        if self.comm is None or self.size == 1:
            return
        req, backoff = self.comm.Ibarrier(), Backoff(cap=5e-3)
        while not req.Test():
            backoff.sleep()

    def bcast(self, obj):
        return obj if self.comm is None else self.comm.bcast(obj, root=0)

    def gather(self, obj):
        return [obj] if self.comm is None else self.comm.gather(obj, root=0)

    def scatter(self, objs):
        return objs[0] if self.comm is None else self.comm.scatter(objs, root=0)

    def gather_watched(self, obj, limit, hosts):
        """gather() whose root polls (no spinning) and gives up on a silent rank:
        WorkerTimeout naming it once `limit` seconds have passed."""
        if self.comm is None or self.size == 1:
            return [obj]
        if self.rank != 0:
            self.comm.send(obj, dest=0, tag=Tag.PART)
            return None
        parts, t0, backoff = {0: obj}, time.perf_counter(), Backoff()
        while len(parts) < self.size:
            got = False
            for w in range(1, self.size):
                if w not in parts and self.comm.iprobe(source=w, tag=Tag.PART):
                    parts[w] = self.comm.recv(source=w, tag=Tag.PART)
                    got = True
            waited = time.perf_counter() - t0
            if len(parts) < self.size and waited > limit:
                silent = ", ".join(f"worker {w} of {self.size} on {hosts.get(w, '?')}"
                                   for w in range(1, self.size) if w not in parts)
                raise WorkerTimeout(f"{silent} did not answer for {waited:.1f} s "
                                    f"(limit {limit:.1f} s)")
            backoff.step(got)
        return [parts[w] for w in range(self.size)]

    def abort(self, code=1):
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)
