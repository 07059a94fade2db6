"""BLAS threads per rank under an MPI launcher, set before numpy loads its BLAS.

Under `mpiexec -n N` every rank's OpenBLAS would start one thread per core: N
ranks x cores threads on `cores` cores. The kernels are ours and single
threaded (ranks are the parallelism), but the root's bound GEMMs and the
inference layers go through numpy's BLAS, and oversubscribed OpenBLAS threads
spin against the workers: at 1024^2 with 3 ranks on 2 cores, one BLAS thread
per rank brought the whole job from 0.27-0.38 s to 0.19-0.29 s. So each rank
gets its share of the cores (at least 1) unless the user set the variable.

Only effective when lrmpi is imported before numpy (the `lrmpi` command and
`python -m lrmpi...` are); the user's own settings always win.
"""
import os
import sys

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
LOCAL_SIZE = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")  # Hydra, Open MPI
WORLD_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS")


def _first(names, env):
    """The first of the variables `names` set to a positive integer, or None."""
    for var in names:
        value = env.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def local_ranks(env):
    """Ranks on this node from the launcher's environment, or None."""
    return _first(LOCAL_SIZE, env) or _first(WORLD_SIZE, env)


def share(env=None, cores=None, bound_cores=None):
    """BLAS threads for one rank, or None when not started by an MPI launcher.

    cores: the machine's cores; bound_cores: the cores this process may run on
    (a launcher that binds ranks leaves fewer: then all of them are this rank's).
    """
    env = os.environ if env is None else env
    if cores is None:
        cores = os.cpu_count() or 1
    if bound_cores is None:
        bound_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    # no per-node count: the world size is an upper bound
    local = _first(LOCAL_SIZE, env) or _first(WORLD_SIZE, env)
    if local is None or local <= 1:
        return None
    if bound_cores < cores:
        return max(1, bound_cores)
    return max(1, cores // local)


def apply():
    """Set the BLAS thread variables the user left unset; the count set, or None."""
    if "numpy" in sys.modules:
        return None  # too late: numpy's BLAS has read them already
    n = share()
    if n is not None:
        for var in VARIABLES:
            os.environ.setdefault(var, str(n))
    return n
