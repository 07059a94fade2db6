"""Command line: `lrmpi <command>` / `python -m lrmpi <command>`.

Commands are plain functions registered with @command (mpi4py.bench style).
Errors lrmpi raises on purpose print one line and exit non-zero; --debug shows
the traceback.
"""
import argparse
import os
import sys

import numpy as np

from lrmpi import errors
from lrmpi.log import logger
from lrmpi.log import setup as setup_logging

COMMANDS = {}

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DEADLINE = 0, 1, 2, 3


def command(func):
    """Register `func(argv) -> int` as the subcommand named after it."""
    COMMANDS[func.__name__] = func
    return func


def _parser(name, description):
    return _Parser[0](prog=f"lrmpi {name}", description=description)


# --- info ---

@command
def info(argv):
    """Versions, selected kernel ISA and MPI library."""
    _parser("info", info.__doc__).parse_args(argv)
    import platform

    import h5py

    import lrmpi
    from lrmpi.numerics import kernels
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
    from lrmpi.parallel.comm import env_rank
    if env_rank() != 0:  # under mpirun: print once
        return EXIT_OK
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


# --- shared options ---

def _add_plane_options(p, planes):
    p.add_argument("--bits", type=int, default=7, help="bits per digit plane, 1..7 (default 7)")
    p.add_argument("--planes", type=int, default=planes, help=f"digit planes (default {planes})")


def _add_numeric_options(p, planes=4):
    _add_plane_options(p, planes)
    p.add_argument("--order", default="antidiagonal",
                   help="antidiagonal (default) | pairwise | lshape")
    p.add_argument("--cutoff", type=int, default=None, help="skip pairs of level > CUTOFF")
    p.add_argument("--no-cutoff", dest="cutoff", action="store_const", const=None,
                   help="include every pair")
    p.add_argument("--scale", default="row", help="row (default) | tensor")


def _add_job_options(p):
    p.add_argument("-o", "--output", default=None, help="HDF5 checkpoint to write")
    p.add_argument("--deadline", default=None,
                   help="stop by then: 90s, 5m, 1h30m, 2:30:00, 2026-11-27T18:00, @EPOCH "
                        "(inside SLURM the job's end time applies too)")
    p.add_argument("--margin", type=float, default=None,
                   help="seconds kept free before the deadline (default: 10%% of the time, "
                        "at most 10 s)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in -o if it matches the inputs")
    p.add_argument("--requeue", action="store_true",
                   help="inside SLURM: when stopped by the deadline, scontrol requeue the job "
                        "(run it with --resume)")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="requeue at most this many times (SLURM_RESTART_COUNT; default 3)")
    p.add_argument("--worker-timeout", type=float, default=None,
                   help="seconds a worker may sit on one task before the job is failed as hung "
                        "(default: 20 median task times, at least 30 s)")
    p.add_argument("--no-fsync", dest="fsync", action="store_false",
                   help="skip fsync of checkpoints (still safe against process kills, "
                        "not against a node crash)")


def _job_options(a):
    if a.worker_timeout is not None and a.worker_timeout <= 0:
        raise errors.ConfigError(f"--worker-timeout must be > 0, got {a.worker_timeout}")
    return dict(bits=a.bits, planes=a.planes, order=a.order, cutoff=a.cutoff, scale=a.scale,
                worker_timeout=a.worker_timeout,
                deadline=a.deadline, margin=a.margin, resume=a.resume, fsync=a.fsync,
                requeue=a.requeue, max_restarts=a.max_restarts)


def _exit_code(outcome):
    """complete -> 0; stopped by deadline or signal -> EXIT_DEADLINE; workers -> 0."""
    if outcome is None or outcome.status == "complete":
        return EXIT_OK
    return EXIT_DEADLINE


# --- matmul ---

@command
def matmul(argv):
    """C = A B in layers of increasing resolution, over every MPI rank."""
    p = _parser("matmul", matmul.__doc__)
    p.add_argument("A", help="left operand: A.npy or FILE.h5:/dataset")
    p.add_argument("B", help="right operand: B.npy or FILE.h5:/dataset")
    _add_numeric_options(p)
    _add_job_options(p)
    a = p.parse_args(argv)
    from lrmpi.jobs.matmul import run_matmul
    return _exit_code(run_matmul(a.A, a.B, a.output, **_job_options(a)))


# --- infer ---

def _add_infer_options(p):
    _add_plane_options(p, 4)
    p.add_argument("--no-adaptive", dest="adaptive", action="store_false",
                   help="refine every sample at every resolution")
    p.add_argument("--gray", default="0.3,0.6",
                   help="binary gray zone LO,HI: scores inside are refined (default 0.3,0.6)")
    p.add_argument("--class-margin", type=float, default=0.1,
                   help="multi-class: refine while top-1 minus top-2 < this (default 0.1)")


def _infer_options(a):
    try:
        lo, hi = (float(x) for x in a.gray.split(","))
    except ValueError:
        raise errors.ConfigError(f"--gray {a.gray!r}: expected LO,HI such as 0.3,0.6") from None
    return dict(bits=a.bits, planes=a.planes, adaptive=a.adaptive, gray=(lo, hi),
                margin=a.class_margin, deadline=a.deadline, time_margin=a.margin,
                resume=a.resume, fsync=a.fsync, worker_timeout=a.worker_timeout)


@command
def infer(argv):
    """Layered inference of an ONNX (or lrmpi .npz) model on DATA, over every MPI rank."""
    p = _parser("infer", infer.__doc__)
    p.add_argument("model", help="MODEL.onnx or lrmpi weights MODEL.npz")
    p.add_argument("data", help="samples: DATA.npy or FILE.h5:/dataset (first axis = samples)")
    _add_infer_options(p)
    _add_job_options(p)
    a = p.parse_args(argv)
    from lrmpi.jobs.inference import run_infer
    return _exit_code(run_infer(a.model, a.data, a.output, **_infer_options(a)))


def _demo_infer(a):
    """--infer: the digits MLP, layered and adaptive, beside one-shot float32."""
    import tempfile
    import time

    from lrmpi.experiments import digits
    from lrmpi.jobs.inference import run_infer
    from lrmpi.nn import model as M
    from lrmpi.parallel.comm import get_comm, rank_size
    rank, size = rank_size(get_comm())
    logger.setLevel("WARNING")
    X = y = None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "digits-mlp.onnx")
        if rank == 0:
            X, y = digits.mlp_onnx(path, binary=a.binary)
            from lrmpi.nn.onnx_import import load_model
            mdl = load_model(path)
            X32 = X.astype(np.float32)
            t = time.perf_counter()
            one = M.forward(mdl, X32)
            t_one = time.perf_counter() - t
            pred = (one[:, 0] > 0.5).astype(int) if one.shape[1] == 1 else one.argmax(1)
            print(f"lrmpi demo --infer: digits {'even/odd' if a.binary else '10-class'} MLP, "
                  f"{len(X)} test samples, {a.planes} planes, {size} rank(s)")
            print(f"one-shot float32: accuracy {np.mean(pred == y):.4f}  time {t_one:.4f} s")
            print(f"{'res':>4} {'elapsed_s':>9} {'refined':>7} {'work':>6} {'accuracy':>8}")
        get_comm() is not None and get_comm().Barrier()

        def show(meta, scores, predicted, refined):
            print(f"{meta['index']:>4} {meta['elapsed_s']:>9.4f} {int(refined.sum()):>7} "
                  f"{meta['work'] / meta['work_all']:>6.3f} {np.mean(predicted == y):>8.4f}",
                  flush=True)

        outcome = run_infer(path if rank == 0 else None, X, a.output, planes=a.planes,
                            adaptive=a.adaptive, on_resolution=show)
    if rank == 0:
        total = sum(m["work"] for m in outcome.resolutions)
        every = sum(m["work_all"] for m in outcome.resolutions)
        print(f"work: {total / every:.3f} of refining every sample at every resolution")
    return _exit_code(outcome)


# --- demo ---

@command
def demo(argv):
    """A layered matmul on generated matrices: one line per resolution."""
    p = _parser("demo", demo.__doc__)
    p.add_argument("--n", type=int, default=1024, help="matrix size n x n (default 1024)")
    p.add_argument("--seed", type=int, default=0)
    _add_numeric_options(p, planes=8)
    _add_job_options(p)
    p.add_argument("--infer", action="store_true",
                   help="layered inference of a digits MLP instead of a matmul")
    p.add_argument("--binary", action="store_true", help="with --infer: the even/odd task")
    p.add_argument("--no-adaptive", dest="adaptive", action="store_false",
                   help="with --infer: refine every sample")
    # 8 planes of 7 bits hold all 53 bits of a double; pairs past level 9 add
    # nothing measurable (the Ozaki triangle), so the demo stops there
    p.set_defaults(cutoff=9)
    a = p.parse_args(argv)
    if a.infer:
        if "--planes" not in argv:
            a.planes = 4
        return _demo_infer(a)
    if a.n < 1:
        raise errors.ConfigError(f"--n must be >= 1, got {a.n}")
    from lrmpi.jobs.matmul import run_matmul
    from lrmpi.parallel.comm import get_comm, rank_size
    rank, size = rank_size(get_comm())
    A = B = ref = None
    logger.setLevel("WARNING")  # the demo prints its own table
    if rank == 0:
        rng = np.random.default_rng(a.seed)
        # rows and columns of different magnitudes: what per-row scaling is for
        A = rng.standard_normal((a.n, a.n)) * np.exp(rng.uniform(-3, 3, (a.n, 1)))
        B = rng.standard_normal((a.n, a.n)) * np.exp(rng.uniform(-3, 3, (1, a.n)))
        ref = A @ B
        print(f"lrmpi demo: C = A B, n = {a.n}, {a.planes} planes of {a.bits} bits, "
              f"order {a.order}, {size} rank(s)")
        print(f"{'res':>4} {'pairs':>5} {'elapsed_s':>9} {'bound_abs':>10} {'bound_rel':>10} "
              f"{'err_rel':>10}", flush=True)

    def show(meta, C):
        err = np.abs(C - ref).max() / np.abs(ref).max()
        print(f"{meta['index']:>4} {meta['pairs']:>5} {meta['elapsed_s']:>9.3f} "
              f"{meta['bound_abs']:>10.3e} {meta['bound_rel']:>10.3e} {err:>10.3e}", flush=True)

    outcome = run_matmul(A, B, a.output, on_resolution=show, **_job_options(a))
    if rank == 0:
        print("err_rel: max|C_r - numpy A@B| / max|A@B| (numpy float64 is itself rounded, ~1e-16)")
    return _exit_code(outcome)


# --- inspect ---

@command
def inspect(argv):
    """Table of a checkpoint's resolutions, times, bounds and status."""
    p = _parser("inspect", inspect.__doc__)
    p.add_argument("path", help="OUT.h5 written by lrmpi")
    p.add_argument("--plot", default=None, metavar="PNG", help="draw error bound against time")
    a = p.parse_args(argv)
    from lrmpi.jobs.checkpoint import Checkpoint
    ck = Checkpoint(a.path, safe=True)
    at = ck.attrs
    print(f"{a.path}: {at.get('kind')} status={at.get('status')} completed={at.get('completed')}"
          f"/{at.get('planned')} bits={at.get('bits')} planes={at.get('planes')} "
          f"order={at.get('order')} lrmpi {at.get('lrmpi_version')}")
    if at.get("kind") == "infer":
        print(f"{at.get('n_samples')} samples, adaptive={bool(at.get('adaptive'))}, "
              f"model {at.get('model')}, {at.get('ranks')} rank(s)")
    if at.get("kind") == "matmul":
        print(f"shape {at.get('m')}x{at.get('k')} @ {at.get('k')}x{at.get('n')}, "
              f"{at.get('ranks')} rank(s)")
    if at.get("message"):
        print(f"message: {at['message']}")
    rows = [ck.resolution(i, datasets=False)[0] for i in ck.resolution_indices()]
    print(f"{'res':>4} {'elapsed_s':>10} {'pairs':>6} {'bound_abs':>11} {'bound_rel':>11}")
    for i, r in zip(ck.resolution_indices(), rows):
        print(f"{i:>4} {r['elapsed_s']:>10.3f} {r['pairs']:>6} {r['bound_abs']:>11.3e} "
              f"{r['bound_rel']:>11.3e}")
    if a.plot:
        _plot(a.plot, a.path, rows)
    return EXIT_OK


def _plot(png, title, rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise errors.ConfigError("--plot needs matplotlib (pip install 'lrmpi[plot]')") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    t = [r["elapsed_s"] for r in rows]
    ax.semilogy(t, [r["bound_rel"] for r in rows], "o-", label="bound_rel")
    ax.semilogy(t, [r["bound_abs"] for r in rows], "s--", label="bound_abs")
    ax.set_xlabel("elapsed (s)")
    ax.set_ylabel("error bound")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


# --- bench ---

@command
def bench(argv):
    """Benchmarks: `lrmpi bench kernels`."""
    from lrmpi.experiments import bench as bench_mod
    return bench_mod.main(argv)


# --- entry point ---

class _QuietParser(argparse.ArgumentParser):
    """On ranks other than 0: usage errors exit 2 without printing (rank 0 prints)."""

    def error(self, message):
        sys.exit(EXIT_USAGE)

    def print_help(self, file=None):
        pass


_Parser = [argparse.ArgumentParser]  # the parser class main() picked for this rank


def main(argv=None):
    """Run one command; returns the exit code (see README: 0, 1, 2, 3)."""
    from lrmpi.parallel.comm import env_rank
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [x for x in argv if x != "--debug"]
    root = env_rank() == 0
    _Parser[0] = argparse.ArgumentParser if root else _QuietParser
    setup_logging()
    top = _Parser[0](
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
        if root:  # one line, even when a library's message (HDF5's) spans several
            print("lrmpi: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, errors.ConfigError) else EXIT_ERROR
    except KeyboardInterrupt:
        if root:
            print("lrmpi: interrupted", file=sys.stderr)
        return 130


def console():
    """Console-script entry point: exit with main()'s status; an unexpected
    exception on any rank ends the whole MPI job (as mpi4py.run does)."""
    import signal
    if hasattr(signal, "SIGPIPE"):  # `lrmpi inspect x.h5 | head` ends quietly, like Unix tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        code = main()
    except SystemExit:
        raise
    except BaseException:
        import traceback
        traceback.print_exc()
        from lrmpi.parallel.comm import abort
        abort(1)
        code = EXIT_ERROR
    sys.exit(code)
