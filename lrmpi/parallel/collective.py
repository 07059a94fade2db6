"""The few collectives of a data-parallel job (inference), also for one process
without MPI."""
import numpy as np

from lrmpi.parallel import shipping
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import hostname, rank_size
from lrmpi.parallel.shipping import identity as _identity


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
        """`obj` from rank 0 to every rank; arrays it maps from a file read-only (a
        cached model's weights) are mapped by the ranks on rank 0's host themselves
        (parallel/shipping.py)."""
        if self.comm is None or self.size == 1:
            return obj
        return shipping.bcast(self.comm, self.rank, obj)

    def gather(self, obj):
        return [obj] if self.comm is None else self.comm.gather(obj, root=0)

    def bcast_array(self, X, path=None):
        """An array from rank 0 to every rank (X is None on the others), in its own
        dtype: its shape and dtype first, then the buffer (no pickled copy). With
        `path`, the .npy file rank 0 memory-mapped X from: a rank on rank 0's host
        that finds the same file (device, inode, size, modification time) maps it
        itself and nothing travels to it (the first broadcast of 100 MB took 2.8 s,
        most of a job's start)."""
        local = None
        if self.rank == 0 and path is not None and str(path).endswith(".npy") and _mapped(X):
            local = (str(path), _identity(str(path)), hostname())
        head = self.bcast(None if self.rank else (X.shape, X.dtype.str, local))
        if self.comm is None or self.size == 1:
            return X
        shape, dtype, local = head
        mine = None
        if self.rank and local is not None and local[2] == hostname() and \
                _identity(local[0]) == local[1]:
            try:  # the same file holds the values rank 0 read (and checked)
                mine = np.load(local[0], mmap_mode="r", allow_pickle=False).reshape(shape)
            except (OSError, ValueError):
                mine = None
            if mine is not None and mine.dtype.str != dtype:
                mine = None
        if self.comm.allreduce(int(self.rank != 0 and mine is None)):
            buf = np.ascontiguousarray(X) if self.rank == 0 else np.empty(shape, np.dtype(dtype))
            self.comm.Bcast(buf, root=0)
            mine = buf if mine is None else mine
        return X if self.rank == 0 else mine


def _mapped(X):
    """Whether X is (a view of) a memory-mapped file, as inputs.load maps .npy files."""
    while X is not None:
        if isinstance(X, np.memmap):
            return True
        X = X.base if isinstance(X, np.ndarray) else None
    return False
