"""Which launcher started this process, which MPI library mpi4py loads, and whether
the two belong together; where that library's own mpiexec is.

A launcher of another MPI starts N processes that each find themselves rank 0 of
a world of 1 (N independent jobs racing on one output), or makes MPI_Init abort
with a stack of internal errors. Both become one line here (errors.LaunchError),
from the launcher's own variables. mpi4py itself is imported by comm.py only:
functions here take its MPI module, or comm.library, as an argument.
"""
import os
import subprocess

from lrmpi import errors

# The launcher's own count of the processes it started: MPI launchers first (Open
# MPI's mpirun/prterun; PMI: Hydra, srun --mpi=pmi2, Intel MPI), SLURM's step size
# only when none is set (srun --mpi=none, or a PMIx step): Open MPI's mpirun starts
# its daemons as one SLURM step over every node, so its ranks inherit that step's
# size. A batch step (the job script itself, one process) sets none of them.
LAUNCHER_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS")


def launcher_size(environ=None):
    """(variable, processes) the launcher says it started; (None, 1) without one."""
    env = os.environ if environ is None else environ
    for var in LAUNCHER_SIZE:
        if env.get(var, "").isdigit():
            return var, int(env[var])
    return None, 1


def describe(MPI):
    """{"version": the library's name and version, "family": openmpi / mpich / other,
    "path": the libmpi loaded (Linux; None elsewhere)} of an imported mpi4py.MPI
    (initialized or not)."""
    # "Open MPI v4.1.4, package: ..., ident: ..." -> "Open MPI v4.1.4"
    version = " ".join(MPI.Get_library_version().splitlines()[0].split(",")[0].split())
    family = ("openmpi" if "Open MPI" in version else
              "mpich" if any(w in version for w in ("MPICH", "Intel", "MVAPICH")) else "other")
    path = None
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                name = line.split()[-1]
                if os.path.basename(name).startswith("libmpi.so"):
                    path = name
                    break
    except OSError:
        pass
    return {"version": version, "family": family, "path": path}


def check_before_init(lib, environ=None):
    """A LaunchError (to raise later) if MPI_Init would abort: MPICH (or an MPI of its
    family) started by Open MPI's launcher, which speaks only PMIx to its ranks; Open
    MPI started by srun without a PMI (--mpi=none), which it cannot wire up."""
    env = os.environ if environ is None else environ
    if lib["family"] == "mpich" and env.get("OMPI_COMM_WORLD_SIZE", "").isdigit():
        size = int(env["OMPI_COMM_WORLD_SIZE"])
        return _mismatch(f"Open MPI's launcher started {size} process(es) "
                         f"(OMPI_COMM_WORLD_SIZE={size})", lib)
    step = env.get("SLURM_STEP_NUM_TASKS", "")
    if lib["family"] == "openmpi" and step.isdigit() and int(step) > 1 and \
            not any(v in env for v in ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK")):
        return _srun_without_pmi(f"srun started {step} tasks (SLURM_STEP_NUM_TASKS={step})",
                                 lib)
    return None


def check_world(world_size, library, environ=None):
    """A LaunchError if the launcher started several processes but each is alone in
    its MPI world; None if they match (or no launcher: one process)."""
    var, size = launcher_size(environ)
    if world_size != 1 or size <= 1:
        return None
    started = f"the launcher started {size} processes ({var}={size}) but each is alone " \
              f"in its MPI world"
    lib = library()
    if lib is None:
        return errors.LaunchError(f"{started}: mpi4py is not installed (pip install "
                                  f"'lrmpi[mpi]', or build it against the site's MPI)")
    if var == "SLURM_STEP_NUM_TASKS":
        return _srun_without_pmi(started, lib)
    return _mismatch(started, lib)


def _srun_without_pmi(started, lib):
    return errors.LaunchError(
        f"{started}: srun passed no process manager interface that mpi4py's MPI "
        f"({lib['version']}) reads: use srun --mpi=pmi2 for MPICH, --mpi=pmix for "
        f"Open MPI (lrmpi info shows the library)")


def _mismatch(started, lib):
    exe = find_mpiexec(lib)
    where = f" at {lib['path']}" if lib["path"] else ""
    fix = (f"start it with {exe}" if exe else "start it with that MPI's own mpiexec") + \
        " or build mpi4py against the launcher's MPI"
    return errors.LaunchError(f"{started}: the launcher is not of mpi4py's MPI "
                              f"({lib['version']}{where}); {fix} (lrmpi info shows both)")


# what each MPI's launcher says to --version: a candidate must say it (Debian's
# /usr/bin/mpiexec is an alternatives link that may point to another MPI)
_LAUNCHER_SAYS = {"openmpi": ("Open MPI", "OpenRTE", "PRRTE", "prterun"),
                  "mpich": ("HYDRA", "Intel(R) MPI", "MVAPICH")}


def find_mpiexec(lib):
    """Path of the mpiexec of `lib` (describe()'s dict): in the bin/ folder of the
    installation holding its libmpi (one to three folders above it: a venv, a module,
    /usr on Debian), answering --version as that MPI's launcher; None if not found."""
    if lib is None or not lib.get("path"):
        return None
    family = lib["family"]
    names = [f"mpiexec.{family}", "mpiexec", "mpiexec.hydra", "mpirun"]
    folder = os.path.dirname(os.path.realpath(lib["path"]))
    for _ in range(3):
        folder = os.path.dirname(folder)
        for name in names:
            exe = os.path.join(folder, "bin", name)
            if os.access(exe, os.X_OK) and _launcher_of(exe, family):
                return exe
    return None


def _launcher_of(exe, family):
    says = _LAUNCHER_SAYS.get(family)
    if says is None:
        return True  # an MPI we do not know: its own bin/ is the best guess
    try:
        p = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(word in p.stdout + p.stderr for word in says)
