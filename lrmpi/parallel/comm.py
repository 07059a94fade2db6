"""The communicator lrmpi owns: COMM_WORLD.Dup(), made once, here; mpi4py is
imported here and nowhere else.

mpi4py is optional: without it (or with one rank) every job runs in this
process through the same driver code (a local endpoint instead of workers).
"""
import os

_COMM = None
_MPI = None


def mpi():
    """The mpi4py.MPI module, or None when mpi4py is not installed."""
    global _MPI
    if _MPI is None:
        try:
            from mpi4py import MPI
        except ImportError:
            return None
        _MPI = MPI
    return _MPI


def get_comm(comm=None):
    """`comm` if given, else lrmpi's duplicate of COMM_WORLD (None without mpi4py)."""
    global _COMM
    if comm is not None:
        return comm
    if _COMM is None:
        MPI = mpi()
        if MPI is None:
            return None
        _COMM = MPI.COMM_WORLD.Dup()
    return _COMM


def hostname():
    import socket
    return socket.gethostname()


def rank_size(comm):
    return (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())


def env_rank():
    """This process's rank from the launcher's environment, without starting MPI."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def root_has_a_core(comm):
    """Whether rank 0 should compute beside its workers (config.root_computes):
    "auto": when the ranks on its node do not outnumber its cores."""
    from lrmpi import blas_threads, config
    mode = config.get().root_computes
    if mode != "auto":
        return mode == "yes"
    local = blas_threads.local_ranks(os.environ) or rank_size(comm)[1]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    return local <= cores


def abort(code=1):
    """End every rank of the job now (mpi4py.run's behaviour on an uncaught error)."""
    MPI = mpi()
    if MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized() \
            and MPI.COMM_WORLD.Get_size() > 1:
        MPI.COMM_WORLD.Abort(code)


def mpi_info():
    """[(name, value)] describing mpi4py and the MPI library, for `lrmpi info`."""
    try:
        import mpi4py
    except ImportError:
        return [("mpi4py", "not installed (pip install 'lrmpi[mpi]')")]
    MPI = mpi()
    return [("mpi4py", mpi4py.__version__),
            ("MPI library", MPI.Get_library_version().splitlines()[0].strip()),
            ("MPI world size", str(MPI.COMM_WORLD.Get_size()))]


def testsome(requests):
    """Indices of the `requests` that completed (MPI_Testsome), or [].

    Objects that are not mpi4py requests but have Test() (the unit tests'
    in-process communicator) are tested one by one."""
    MPI = mpi()
    if MPI is not None and all(isinstance(r, MPI.Request) for r in requests):
        return MPI.Request.Testsome(requests) or []
    return [i for i, r in enumerate(requests) if r.Test()]


def waitall(requests):
    """Complete every request in `requests` (MPI_Waitall; see testsome)."""
    MPI = mpi()
    if MPI is not None and all(isinstance(r, MPI.Request) for r in requests):
        MPI.Request.Waitall(list(requests))
        return
    for r in requests:
        r.Wait()
