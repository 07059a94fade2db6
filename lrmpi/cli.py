"""Command line: `lrmpi <command>` / `python -m lrmpi <command>`.

Commands are plain functions registered with @command (mpi4py.bench style).
Errors lrmpi raises on purpose print one line and exit non-zero; --debug shows
the traceback.
"""
import argparse
import sys

import numpy as np

from lrmpi import errors
from lrmpi.log import logger, setup as setup_logging

COMMANDS = {}

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def command(func):
    """Register `func(argv) -> int` as the subcommand named after it."""
    COMMANDS[func.__name__] = func
    return func


def _parser(name, description):
    return argparse.ArgumentParser(prog=f"lrmpi {name}", description=description)


# --- info ---

@command
def info(argv):
    """Versions, selected kernel ISA and MPI library."""
    _parser("info", info.__doc__).parse_args(argv)
    import platform

    import h5py

    import lrmpi
    from lrmpi import kernels
    rows = [
        ("lrmpi", lrmpi.__version__),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("h5py", f"{h5py.version.version} (HDF5 {h5py.version.hdf5_version}, "
                 f"parallel={h5py.get_config().mpi})"),
        ("kernel isa", f"{kernels.selected_isa()} (available: {', '.join(kernels.available_isas())})"),
    ]
    try:
        import mpi4py
        rows.append(("mpi4py", mpi4py.__version__))
        from mpi4py import MPI
        rows.append(("MPI library", MPI.Get_library_version().splitlines()[0].strip()))
        rows.append(("MPI world size", str(MPI.COMM_WORLD.Get_size())))
    except ImportError:
        rows.append(("mpi4py", "not installed (pip install 'lrmpi[mpi]')"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


# --- demo ---

def _add_numeric_options(p, planes=4):
    p.add_argument("--bits", type=int, default=7, help="bits per digit plane, 1..7 (default 7)")
    p.add_argument("--planes", type=int, default=planes, help=f"digit planes (default {planes})")
    p.add_argument("--order", default="antidiagonal",
                   help="antidiagonal (default) | pairwise | lshape")
    p.add_argument("--cutoff", type=int, default=None, help="skip pairs of level > CUTOFF")
    p.add_argument("--no-cutoff", dest="cutoff", action="store_const", const=None,
                   help="include every pair")
    p.add_argument("--scale", default="row", help="row (default) | tensor")


@command
def demo(argv):
    """A layered matmul on generated matrices: one line per resolution."""
    p = _parser("demo", demo.__doc__)
    p.add_argument("--n", type=int, default=1024, help="matrix size n x n (default 1024)")
    p.add_argument("--seed", type=int, default=0)
    _add_numeric_options(p, planes=8)
    # 8 planes of 7 bits hold all 53 bits of a double; pairs past level 9 add
    # nothing measurable (the Ozaki triangle), so the demo stops there
    p.set_defaults(cutoff=9)
    a = p.parse_args(argv)
    if a.n < 1:
        raise errors.ConfigError(f"--n must be >= 1, got {a.n}")
    from lrmpi.layered import LayeredMatmul
    rng = np.random.default_rng(a.seed)
    # rows and columns of different magnitudes: what per-row scaling is for
    A = rng.standard_normal((a.n, a.n)) * np.exp(rng.uniform(-3, 3, (a.n, 1)))
    B = rng.standard_normal((a.n, a.n)) * np.exp(rng.uniform(-3, 3, (1, a.n)))
    lm = LayeredMatmul(A, B, bits=a.bits, planes=a.planes, order=a.order, cutoff=a.cutoff,
                       scale=a.scale)
    ref = A @ B
    refmax = np.abs(ref).max()
    print(f"lrmpi demo: C = A B, n = {a.n}, {a.planes} planes of {a.bits} bits, "
          f"order {a.order}, {lm.planned} resolutions")
    print(f"{'res':>4} {'pairs':>5} {'elapsed_s':>9} {'bound_abs':>10} {'bound_rel':>10} "
          f"{'err_rel':>10}")
    for r in lm:
        err = np.abs(r.C - ref).max() / refmax
        print(f"{r.index:>4} {r.pairs:>5} {r.elapsed:>9.3f} {r.bound_abs:>10.3e} "
              f"{r.bound_rel:>10.3e} {err:>10.3e}", flush=True)
    print("err_rel: max|C_r - numpy A@B| / max|A@B| (numpy float64 is itself rounded, ~1e-16)")
    return EXIT_OK


# --- bench ---

@command
def bench(argv):
    """Benchmarks: `lrmpi bench kernels`."""
    from lrmpi import bench as bench_mod
    return bench_mod.main(argv)


# --- entry point ---

def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [x for x in argv if x != "--debug"]
    setup_logging()
    top = argparse.ArgumentParser(
        prog="lrmpi", description="Layered-resolution computation over MPI.",
        epilog="commands: " + ", ".join(sorted(COMMANDS)) + "; add --debug for tracebacks")
    top.add_argument("command", choices=sorted(COMMANDS), metavar="command",
                     help=", ".join(sorted(COMMANDS)))
    top.add_argument("args", nargs=argparse.REMAINDER)
    ns = top.parse_args(argv[:1] if argv else argv)
    try:
        return COMMANDS[ns.command](argv[1:])
    except errors.LrmpiError as exc:
        if debug:
            raise
        print(f"lrmpi: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, errors.ConfigError) else EXIT_ERROR
    except KeyboardInterrupt:
        logger.error("lrmpi: interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def console():
    """Console-script entry point: exit with main()'s status."""
    sys.exit(main())
