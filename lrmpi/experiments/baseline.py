"""One-shot float64 matmul baselines, what a user would write without lrmpi.

`mpiexec -n N python -m lrmpi.experiments.baseline A.npy B.npy [--out C.npy]`:
rank 0 loads A and B, scatters row blocks of A (Scatterv), broadcasts B (Bcast),
every rank multiplies its block with numpy, and rank 0 gathers C (Gatherv) and
saves it (fsynced) if asked. Prints one JSON line: seconds from start to C on
rank 0 (and to C on disk) and the bytes rank 0 sent.

`python -m lrmpi.experiments.baseline --numpy A.npy B.npy C.npy`: one process
loads, multiplies with numpy's threads and saves C (fsynced).
"""
import json
import os
import sys
import time

import numpy as np


def save(path, C):
    """np.save, then fsync: on disk, as lrmpi's durable results are."""
    with open(path, "wb") as f:
        np.save(f, C)
        f.flush()
        os.fsync(f.fileno())


def main(argv):
    t0 = time.perf_counter()
    if argv and argv[0] == "--numpy":
        A, B = np.load(argv[1]), np.load(argv[2])
        C = A @ B
        t1 = time.perf_counter()
        save(argv[3], C)
        print(json.dumps({"seconds": t1 - t0, "durable_s": time.perf_counter() - t0}))
        return 0
    from lrmpi.parallel.comm import get_comm
    comm = get_comm()
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    A = B = None
    if comm.Get_rank() == 0:
        A, B = np.load(argv[0]), np.load(argv[1])
    C, sent = oneshot(comm, A, B)
    if comm.Get_rank() == 0:
        t1 = time.perf_counter()
        if out:
            save(out, C)
        print(json.dumps({"seconds": t1 - t0, "durable_s": time.perf_counter() - t0,
                          "bytes_sent": sent, "ranks": comm.Get_size()}))
    return 0


def oneshot(comm, A, B):
    """(C, bytes rank 0 sent) on rank 0, (None, 0) elsewhere: A, B given on rank 0.

    A worker marked slow by LRMPI_TEST_SLOW_RANK/FACTOR (lrmpi.parallel.faults) is slowed
    here as in lrmpi's own workers, so heterogeneous-worker benchmarks compare
    like with like.
    """
    from lrmpi.parallel import faults
    from lrmpi.parallel.comm import mpi
    from lrmpi.parallel.partition import counts_displs
    rank, size = comm.Get_rank(), comm.Get_size()
    shape = (A.shape[0], A.shape[1], B.shape[1]) if rank == 0 else None
    m, k, n = comm.bcast(shape, root=0)
    counts, displs = counts_displs(m, size)
    mine = np.empty((counts[rank], k))
    comm.Scatterv([A, [c * k for c in counts], [d * k for d in displs], mpi().DOUBLE]
                  if rank == 0 else None, mine, root=0)
    if rank != 0:
        B = np.empty((k, n))
    comm.Bcast(B, root=0)
    t = time.perf_counter()
    Cb = mine @ B
    if rank:
        faults.after_task(rank, time.perf_counter() - t)
    C = np.empty((m, n)) if rank == 0 else None
    comm.Gatherv(Cb, [C, [c * n for c in counts], [d * n for d in displs], mpi().DOUBLE]
                 if rank == 0 else None, root=0)
    if rank != 0:
        return None, 0
    return C, 8 * (m * k - counts[0] * k + (size - 1) * k * n)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
