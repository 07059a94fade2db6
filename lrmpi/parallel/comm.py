"""The communicator lrmpi owns: COMM_WORLD.Dup(), made once, here; mpi4py is
imported here and nowhere else.

mpi4py is optional: without it (or with one rank) every job runs in this
process through the same driver code (a local endpoint instead of workers).

MPI is initialized here, once the launcher that started this process is known
to be of mpi4py's MPI (lrmpi.parallel.launcher: a launcher of another MPI starts
N singletons, each rank 0 of 1, or makes MPI_Init abort).
"""
import json
import os
import subprocess
import sys
import warnings

from lrmpi.parallel import launcher

_COMM = None
_MPI = None
_LAUNCH_ERROR = None  # launcher.check_before_init's verdict: MPI left uninitialized


def mpi():
    """The mpi4py.MPI module, or None when mpi4py is not installed. MPI is initialized
    here (as mpi4py would at import, same thread level, finalized at exit) after the
    launcher check: MPI_Init under another MPI's launcher aborts with a stack of
    internal errors (MPICH under Open MPI's mpirun), so the check comes first and,
    when it fails, MPI is left uninitialized and get_comm() raises its one line."""
    global _MPI, _LAUNCH_ERROR
    if _MPI is None:
        try:
            import mpi4py
        except ImportError:
            return None
        if "mpi4py.MPI" not in sys.modules:
            mpi4py.rc.initialize, mpi4py.rc.finalize = False, True
        from mpi4py import MPI
        if not MPI.Is_initialized():
            _LAUNCH_ERROR = launcher.check_before_init(launcher.describe(MPI))
            if _LAUNCH_ERROR is None:
                with warnings.catch_warnings():
                    # mpi4py's own warning for a launcher of another MPI: get_comm()
                    # says it in one line, naming the launcher to use instead
                    warnings.filterwarnings("ignore",
                                            message="suspicious MPI execution environment")
                    MPI.Init_thread(_THREAD_LEVELS[mpi4py.rc.thread_level](MPI))
        _MPI = MPI
    return _MPI


_THREAD_LEVELS = {"multiple": lambda MPI: MPI.THREAD_MULTIPLE,
                  "serialized": lambda MPI: MPI.THREAD_SERIALIZED,
                  "funneled": lambda MPI: MPI.THREAD_FUNNELED,
                  "single": lambda MPI: MPI.THREAD_SINGLE}


def get_comm(comm=None):
    """`comm` if given, else lrmpi's duplicate of COMM_WORLD (None without mpi4py);
    LaunchError if the launcher that started this process is not of mpi4py's MPI."""
    global _COMM
    if comm is not None:
        return comm
    if _COMM is None:
        MPI = mpi()
        if _LAUNCH_ERROR is not None:
            raise _LAUNCH_ERROR
        size = 1 if MPI is None else MPI.COMM_WORLD.Get_size()
        error = launcher.check_world(size, library)
        if error is not None:
            raise error
        if MPI is None:
            return None
        _COMM = MPI.COMM_WORLD.Dup()
    return _COMM


# Runs in a child so that asking which MPI mpi4py loads starts no MPI here: a process
# that initialized MPI (a singleton) must not start an mpiexec of its own (Open MPI
# refuses a nested launcher).
_PROBE = """import json, mpi4py
mpi4py.rc.initialize = False
from mpi4py import MPI
from lrmpi.parallel.launcher import describe
print(json.dumps(describe(MPI)))"""


def library(probe=False):
    """launcher.describe() of the MPI library mpi4py loads, or None without mpi4py;
    probe=True asks a child process (this one starts no MPI)."""
    if not probe:
        MPI = mpi()
        return None if MPI is None else launcher.describe(MPI)
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                           timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return json.loads(p.stdout) if p.returncode == 0 else None


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
    """[(name, value)] describing mpi4py, the MPI library and its launcher, and the
    launcher that started this process, for `lrmpi info`."""
    try:
        import mpi4py
    except ImportError:
        return [("mpi4py", "not installed (pip install 'lrmpi[mpi]', or build it against "
                           "the site's MPI)")]
    MPI = mpi()
    lib = launcher.describe(MPI)
    var, size = launcher.launcher_size()
    world = MPI.COMM_WORLD.Get_size() if MPI.Is_initialized() else None
    started = f"{size} process(es) ({var})" if var else "none (one process)"
    if _LAUNCH_ERROR is not None or (world == 1 and size > 1):
        started += " -- MISMATCH: not a launcher of this MPI"
    return [("mpi4py", f"{mpi4py.__version__} from {os.path.dirname(mpi4py.__file__)}"),
            ("MPI library", lib["version"]),
            ("libmpi", lib["path"] or "unknown"),
            ("its mpiexec", launcher.find_mpiexec(lib) or "not found beside libmpi"),
            ("launched by", started),
            ("MPI world size", "not started" if world is None else str(world))]


def bcast_object(comm, obj):
    """comm.bcast(obj, root=0), with the object's large buffers (numpy arrays) sent
    out of band (mpi4py.util.pkl5): no pickled copy of them on the root and none to
    unpickle on the others (a ResNet-50's broadcast to two ranks: 1.55 -> 0.8 s)."""
    MPI = mpi()
    if MPI is not None and isinstance(comm, MPI.Intracomm):
        from mpi4py.util import pkl5
        return pkl5.Intracomm(comm).bcast(obj, root=0)
    return comm.bcast(obj, root=0)


HANDSHAKE_BYTES = 1024   # one rank's command and settings refusal (JSON), at most
START_TIMEOUT_S = 300.0  # ranks that do not all reach lrmpi's handshake by then: ended


def handshake(command, message, stopped=None):
    """Under a launcher of more than one process, every rank's command and settings
    refusal (None if it had none) shared: (rank, message) of the lowest rank that
    refused, or (0, why) when the ranks run different commands (MPMD: `A : B`), or
    None. A collective of every rank, so a rank whose environment or command differs
    cannot leave the others waiting for it in MPI forever; nonblocking, so a stop
    signal or Ctrl-C ends a rank left waiting (a rank that never comes: another
    program), as START_TIMEOUT_S does: MPI_Abort, every rank (`stopped()`: the stop
    signals received so far). One process, or MPI unusable: its own refusal."""
    own = None if message is None else (0, message)
    if launcher.launcher_size()[1] <= 1:
        return own
    try:
        comm = get_comm()
    except Exception:  # noqa: BLE001 -- a launcher of another MPI: the command says so
        return own
    if comm is None:
        return own
    import numpy as np
    mine = json.dumps([command, None if message is None else message[:HANDSHAKE_BYTES // 2]])
    send = np.frombuffer(mine.encode()[:HANDSHAKE_BYTES].ljust(HANDSHAKE_BYTES), np.uint8)
    rows = np.zeros((comm.Get_size(), HANDSHAKE_BYTES), np.uint8)
    _wait(comm, comm.Iallgather(send, rows), command, stopped or (lambda: None))
    said = []
    for row in rows:
        try:
            said.append(tuple(json.loads(bytes(row).decode().rstrip())))
        except ValueError:  # cut in the middle of a character or a string
            said.append(("?", "its message was too long to pass on"))
    for r, (cmd, _) in enumerate(said):
        if cmd != said[0][0]:
            return (0, f"rank {r} runs `lrmpi {cmd}`, rank 0 `lrmpi {said[0][0]}`: every rank "
                       "of a job runs the same lrmpi command")
    got = [(r, m) for r, (_, m) in enumerate(said) if m is not None]
    return got[0] if got else None


def _wait(comm, req, command, stopped):
    """Until `req` completes; a stop (a signal `stopped()` reports, Ctrl-C) or
    START_TIMEOUT_S first ends the whole launch (MPI_Abort: a rank that returned would
    hang in MPI_Finalize)."""
    import time
    limit = time.monotonic() + START_TIMEOUT_S
    why = None
    try:
        while not req.Test():
            if stopped():
                why, code = "stopped while waiting for the other ranks to start", 4
            elif time.monotonic() > limit:
                why, code = (f"the other ranks did not all start lrmpi {command} within "
                             f"{START_TIMEOUT_S:.0f} s (are they running another program?)"), 1
            if why:
                break
            time.sleep(0.01)
    except KeyboardInterrupt:
        why, code = "interrupted while waiting for the other ranks to start", 130
    if why:
        print(f"lrmpi: error: rank {comm.Get_rank()}: {why}", file=sys.stderr, flush=True)
        comm.Abort(code)


def split_off(comm, member):
    """The ranks of `comm` whose `member` is true, in their order, as a communicator of
    their own (a collective of `comm`); None on the other ranks. Free it after use."""
    MPI = mpi()
    sub = comm.Split(0 if member else MPI.UNDEFINED, comm.Get_rank())
    return None if sub == MPI.COMM_NULL else sub


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
