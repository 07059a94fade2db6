"""Benchmarks behind `lrmpi bench NAME` (benchmarks, not timed tests): each module
holds one, registered with @bench, compared with its peers in the same run.

Run them with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, or numpy is measured
on a slower BLAS kernel (the tables say which ran); every table names the CPU and
the kernel ISA, because the CPU behind these machines varies.
"""
import json
import os
import statistics
import time

BENCHES = {}


def bench(func):
    BENCHES[func.__name__] = func
    return func


def add_launcher_option(p):
    p.add_argument("--mpiexec", default=None,
                   help="launcher of the MPI that mpi4py loads (default: the one installed "
                        "beside that libmpi, as `lrmpi info` shows)")


def launcher(a, ranks):
    """[mpiexec, -n, RANKS, ...]: --mpiexec, or the launcher of mpi4py's MPI (one from
    PATH may be another MPI's, which starts N singletons); Open MPI's is told it may
    put more ranks than cores on a node (its default refuses)."""
    from lrmpi import errors
    from lrmpi.parallel import comm
    from lrmpi.parallel import launcher as launchers
    lib = _LIBRARY[0] = _LIBRARY[0] or comm.library(probe=True)
    if lib is None:
        raise errors.LrmpiError("this benchmark runs under mpiexec and needs mpi4py: pip "
                                "install 'lrmpi[mpi]' (or build mpi4py against the site's MPI)")
    exe = a.mpiexec or launchers.find_mpiexec(lib)
    if exe is None:
        raise errors.LrmpiError(f"no mpiexec of mpi4py's MPI ({lib['version']}) found beside "
                                f"{lib['path']}: pass --mpiexec")
    return [exe, "-n", str(ranks)] + (["--oversubscribe"] if lib["family"] == "openmpi" else [])


_LIBRARY = [None]  # comm.library(probe=True), asked once a run


def checked(cmd, env=None, text=True):
    """subprocess.run(cmd) that must succeed: its CompletedProcess, else one-line
    LrmpiError naming the command and its last error line."""
    import subprocess

    from lrmpi import errors
    p = subprocess.run(cmd, capture_output=True, text=text, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        err = p.stderr if text else p.stderr.decode(errors="replace")
        lines = [ln for ln in err.splitlines() if ln.strip()]
        said = ([ln for ln in lines if ln.startswith("lrmpi: error")] or lines or ["no output"])
        raise errors.LrmpiError(f"{os.path.basename(cmd[0])} ... {' '.join(map(str, cmd[-3:]))} "
                                f"exited {p.returncode}: {said[-1]}")
    return p


def need(module, extra, what):
    """Import `module`, or one-line LrmpiError naming the extra that brings it."""
    import importlib

    from lrmpi import errors
    try:
        return importlib.import_module(module)
    except ImportError:
        raise errors.LrmpiError(f"{what} needs {module.split('.')[0]}: pip install "
                                f"'lrmpi[{extra}]'") from None


def machine():
    """CPU model, kernel ISA and numpy's BLAS: printed beside every figure."""
    from lrmpi.machine import cpu_model
    from lrmpi.numerics import kernels
    return {"cpu": cpu_model(), "isa": kernels.selected_isa(), "blas": blas(),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "")}


def describe(m):
    return (f"CPU {m['cpu']}; kernel ISA {m['isa']}; numpy BLAS {m['blas']} "
            f"(OPENBLAS_CORETYPE={m['openblas_coretype']!r})")


def median_time(fn, repeats):
    fn()  # warm-up: first touch of buffers, code paths
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def blas():
    """numpy's BLAS as threadpoolctl sees it (the kernel OpenBLAS picked)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl)"
    blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')}".strip()
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(blas) or "unknown"


def single_thread():
    """Limit BLAS to one thread if threadpoolctl is there; describe numpy's BLAS."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None, blas()
    return threadpool_limits(1), blas()


def shape_of(spec):
    """'n' (square) or 'MxKxN' -> (m, k, n)."""
    dims = [int(x) for x in spec.lower().split("x")]
    if len(dims) == 1:
        dims *= 3
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"a size is n or MxKxN, got {spec!r}")
    return tuple(dims)




COUNTS = ("repeats", "ranks", "n", "jobs", "file_samples")  # at least 1 each


def parsed(p, argv):
    """p.parse_args(argv), its values checked as the jobs check theirs, at once: one
    line and exit 2 for a count below 1, a size that is not n or MxKxN, planes out of
    range, an ISA this machine lacks, a slow-down below 1, a negative load, a --dir
    that is a file, or a --json / --plot file in a folder that is missing or not
    writable (a traceback, or a job's refusal after the numpy baseline's minutes,
    before)."""
    import math

    from lrmpi.errors import ConfigError
    from lrmpi.numerics import validate
    a = p.parse_args(argv)

    def bad(flag, value, what):
        raise ConfigError(f"--{flag.replace('_', '-')} {value!r}: expected {what}")
    for name in COUNTS:
        if getattr(a, name, 1) < 1:
            bad(name, getattr(a, name), "a whole number >= 1")
    for name in ("sizes", "shapes"):
        for spec in str(getattr(a, name, "1")).split(","):
            try:
                shape_of(spec)
            except ValueError:
                bad(name, getattr(a, name), "sizes n or MxKxN (>= 1), comma-separated")
    if getattr(a, "planes", None) is not None:
        validate.planes(a.planes)
    if getattr(a, "isas", None) is not None:
        from lrmpi.numerics import kernels
        have = kernels.available_isas()
        if not a.isas or any(i not in have for i in a.isas.split(",")):
            bad("isas", a.isas, f"some of {','.join(have)} (this machine's)")
    for name, ok, what in (("factor", lambda v: v >= 1, "a slow-down >= 1"),
                           ("load", lambda v: v >= 0, "a load >= 0"),
                           ("samples", lambda v: v > 0, "a fraction > 0")):
        v = getattr(a, name, None)
        if v is not None and not (math.isfinite(v) and ok(v)):  # NaN fails both
            bad(name, v, what)
    if getattr(a, "dir", None) and os.path.exists(a.dir) and not os.path.isdir(a.dir):
        bad("dir", a.dir, "a folder (this is a file)")
    for name in ("json", "plot"):  # written after minutes of measuring: checked now
        path = getattr(a, name, None)
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if os.path.isdir(path) or not os.path.isdir(folder) or \
                    not os.access(folder, os.W_OK):
                bad(name, path, "a file in an existing folder this user can write")
    return a


def save(a, doc, plot, results):
    """--json: write `doc`; --plot: draw `results` with `plot(png, results)`."""
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
    if a.plot:
        plot(a.plot, results)


def panels(count, width):
    """A matplotlib (Agg) figure with `count` panels side by side."""
    matplotlib = need("matplotlib", "plot", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, count, figsize=(width * count, 4), squeeze=False)
    return plt, fig, axes[0]



