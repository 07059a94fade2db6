"""The few collectives of a data-parallel job (inference), also for one process
without MPI."""
import numpy as np

from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import rank_size


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

    def bcast_array(self, X):
        """A float64 array from rank 0 to every rank (its shape first, then the buffer:
        no pickled copy of the data); X is None on the other ranks."""
        shape = self.bcast(None if X is None else X.shape)
        if self.comm is None or self.size == 1:
            return X
        buf = np.ascontiguousarray(X, np.float64) if X is not None else np.empty(shape)
        self.comm.Bcast(buf, root=0)
        return buf
