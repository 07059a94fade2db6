"""`lrmpi inspect`, `lrmpi pack` and `lrmpi info`."""
import os

import numpy as np

from lrmpi import errors
from lrmpi.cli.commands import EXIT_OK, command, parser


@command
def info(argv):
    """Versions, where lrmpi and its kernels were loaded from, kernel ISA, MPI library and
    its launcher; exits 1 when the launcher is not of mpi4py's MPI."""
    parser("info", info).parse_args(argv)
    import platform

    import lrmpi
    from lrmpi.jobs.checkpoint.atomic import hdf5_info
    from lrmpi._ext import kernels as extension
    from lrmpi.machine import cpu_model
    from lrmpi.numerics import kernels
    rows = [
        ("lrmpi", f"{lrmpi.__version__} from {os.path.dirname(lrmpi.__file__)}"),
        ("extension", extension.__file__),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("h5py", hdf5_info()),
        ("cpu", cpu_model()),
        ("kernel isa", f"{kernels.selected_isa()} (available: "
                       f"{', '.join(kernels.available_isas())})"),
    ]
    from lrmpi.parallel import comm
    rows += comm.mpi_info()
    if comm.env_rank() == 0:  # under mpirun: print once
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}", flush=True)
    comm.get_comm()  # LaunchError (one line, exit 1) if the launcher is not of this MPI
    return EXIT_OK


# columns of `inspect`: (header, attribute, format); a missing attribute prints "-"
MATMUL_COLUMNS = [("res", "index", "{:>4}"), ("elapsed_s", "elapsed_s", "{:>9.3f}"),
                  ("durable_s", "durable_s", "{:>9.3f}"), ("method", "method", "{:>6}"),
                  ("pairs", "pairs", "{:>5}"), ("products", "products", "{:>8}"),
                  ("bound_abs", "bound_abs", "{:>10.3e}"), ("bound_rel", "bound_rel", "{:>10.3e}"),
                  ("MB_sent", "root_bytes_sent", "{:>8.1f}"),
                  ("MB_recv", "root_bytes_recv", "{:>8.1f}"), ("fallback", "fallback", "{:>8}")]
INFER_COLUMNS = [("res", "index", "{:>4}"), ("elapsed_s", "elapsed_s", "{:>9.3f}"),
                 ("durable_s", "durable_s", "{:>9.3f}"), ("refined", "refined_count", "{:>7}"),
                 ("certified", "certified_count", "{:>9}"),
                 ("cert_frac", "certified_fraction", "{:>9.4f}"), ("work", "work", "{:>9.3g}"),
                 ("logit_bound", "bound_abs", "{:>11.3e}"), ("bound_rel", "bound_rel", "{:>10.3e}"),
                 ("bound", "bound_method", "{:>13}"), ("bound_cost", "bound_cost", "{:>10.2f}")]


def _width(fmt):
    """The field width of a format such as "{:>10.3e}"."""
    spec = fmt[fmt.index(":") + 2:-1]
    return int(spec.split(".")[0].rstrip("dfegs"))


def _cell(fmt, attrs, key):
    v = attrs.get(key)
    width = _width(fmt)
    if v is None or (isinstance(v, float) and v != v):
        return "-".rjust(width)
    if key.startswith("root_bytes"):
        v = v / 1e6
    return fmt.format(v)


@command
def inspect(argv):
    """Table of a checkpoint's resolutions, times, bounds and status; checks every file."""
    p = parser("inspect", inspect)
    p.add_argument("path", help="OUT.h5 written by lrmpi")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="draw the error bound against time into PNG (or .pdf, .svg, ...)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the --plot file if it exists (never without)")
    p.add_argument("--status", action="store_true",
                   help="print only the status (running, complete, deadline, failed; "
                        "killed: the file says running but no job is writing it): for "
                        "scripts")
    a = p.parse_args(argv)
    if a.overwrite and not a.plot:
        raise errors.ConfigError("--overwrite replaces the --plot file, and there is no --plot")
    if a.status and a.plot:  # one would be dropped
        raise errors.ConfigError("--status prints the status alone, --plot draws the bounds: "
                                 "give one")
    png = _plot_path(a.plot, a.path, a.overwrite) if a.plot else None
    from lrmpi.jobs.checkpoint import Checkpoint, owned
    ck = Checkpoint(a.path, safe=True)
    at = ck.attrs
    from lrmpi.jobs.checkpoint.output import writer_alive
    killed = ck.status == "running" and not writer_alive(a.path)
    if a.status:  # a script waiting while it says "running" would wait for ever
        print("killed" if killed else ck.status)
        return EXIT_OK
    phase = f" ({at['phase']})" if at.get("phase") == "preparing" else ""
    print(f"{a.path}: {ck.kind} status={ck.status}{phase} completed={ck.completed}"
          f"/{ck.planned} bits={at.get('bits')} planes={at.get('planes')} "
          f"order={at.get('order')} lrmpi {at.get('lrmpi_version')}")
    if ck.kind == "infer":
        print(f"{at.get('n_samples')} samples, adaptive={bool(at.get('adaptive'))}, "
              f"model {at.get('model')}, {at.get('ranks')} rank(s)")
    if ck.kind == "matmul":
        print(f"shape {at.get('m')}x{at.get('k')} @ {at.get('k')}x{at.get('n')}, "
              f"{at.get('ranks')} rank(s)")
    if at.get("message"):
        print(f"message: {at['message']}")
    if killed:
        print("note: no job is writing it now: the job was killed (or lost its launcher) "
              "before it could record how it ended; --resume continues it")
    rows = [ck.resolution(i, datasets=False)[0] for i in ck.resolution_indices()]
    checks = ck.verify()  # every file read and checked: damage is an error here
    cols = (INFER_COLUMNS if ck.kind == "infer" else MATMUL_COLUMNS) + \
        [("checksum", "check", "{:>9}")]
    print(" ".join(h.rjust(_width(f)) for h, _, f in cols))
    for i, r in zip(ck.resolution_indices(), rows):
        print(" ".join(_cell(f, {**r, "index": i, "check": checks[i]}, key)
                       for _, key, f in cols))
    if "unchecked" in checks.values():
        print("note: resolutions marked unchecked were written before lrmpi kept checksums; "
              "their data cannot be verified")
    others = owned.strangers(a.path, {ck.job_id}) if ck.job_id else []
    if others:
        print(f"note: {_sidecar_name(a.path)} also holds {', '.join(others)}: not this "
              "checkpoint's files (lrmpi never deletes them)")
    if png:
        _plot(png, a.path, rows, ck.kind)
    return EXIT_OK


def _sidecar_name(path):
    from lrmpi.jobs.checkpoint import schema
    return os.path.basename(schema.sidecar(path))


def _plot_path(png, checkpoint, overwrite):
    """The file --plot will write (.png added if there is no extension); ConfigError
    now, before reading anything, if its folder does not exist, matplotlib cannot write
    its format, or it exists (without --overwrite; never the checkpoint itself)."""
    if not os.path.splitext(png)[1]:
        png += ".png"
    folder = os.path.dirname(os.path.abspath(png))
    if not os.path.isdir(folder):
        raise errors.ConfigError(f"--plot {png}: folder {folder} does not exist")
    ext = os.path.splitext(png)[1][1:].lower()
    formats = _formats()
    if ext not in formats:
        raise errors.ConfigError(f"--plot {png}: cannot draw a .{ext} file; use one of "
                                 + ", ".join(f".{f}" for f in sorted(formats)))
    if os.path.exists(png) and os.path.exists(checkpoint) and os.path.samefile(png, checkpoint):
        raise errors.ConfigError(f"--plot {png} is the checkpoint itself")
    if os.path.lexists(png) and not overwrite:
        raise errors.ConfigError(f"--plot {png} exists; pass --overwrite to replace it")
    if os.path.isdir(png):
        raise errors.ConfigError(f"--plot {png} is a folder")
    return png


def _formats():
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise errors.ConfigError("--plot needs matplotlib (pip install 'lrmpi[plot]')") from None
    return set(FigureCanvasBase.get_supported_filetypes())


def _plot(png, title, rows, kind):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise errors.ConfigError("--plot needs matplotlib (pip install 'lrmpi[plot]')") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    t = [r["elapsed_s"] for r in rows]
    if kind == "infer":
        ax.semilogy(t, [max(r["bound_abs"], 1e-300) for r in rows], "o-",
                    label="max logit bound")
        frac = [r.get("certified_fraction") for r in rows]
        if all(f is not None for f in frac):   # files before it: no second axis
            right = ax.twinx()
            right.plot(t, frac, "s--", color="tab:green", label="certified fraction")
            right.set_ylim(0, 1.02)
            right.set_ylabel("certified fraction")
            right.legend(loc="lower left")
    else:
        ax.semilogy(t, [r["bound_rel"] for r in rows], "o-", label="bound_rel")
        ax.semilogy(t, [r["bound_abs"] for r in rows], "s--", label="bound_abs")
    ax.set_xlabel("elapsed (s)")
    ax.set_ylabel("error bound")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    # a temporary file renamed into place: a failed or interrupted drawing never leaves
    # half a file, nor takes the place of an earlier one
    ext = os.path.splitext(png)[1]
    tmp = f"{png}.tmp.{os.getpid()}{ext}"
    try:
        fig.savefig(tmp, dpi=120, format=ext[1:].lower())
        os.replace(tmp, png)
    except (OSError, ValueError, RuntimeError) as exc:
        raise errors.ConfigError(f"--plot {png}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {png}")


@command
def pack(argv):
    """Write a checkpoint and its resolution files as one self-contained HDF5 file."""
    p = parser("pack", pack)
    p.add_argument("path", help="OUT.h5 written by lrmpi")
    p.add_argument("packed", help="the single file to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace PACKED if it exists (only a file lrmpi wrote)")
    a = p.parse_args(argv)
    from lrmpi.jobs.checkpoint import pack as pack_files
    from lrmpi.jobs.checkpoint.output import check_output
    if os.path.exists(a.packed) and os.path.exists(a.path) and os.path.samefile(a.packed,
                                                                                 a.path):
        raise errors.ConfigError(f"pack: {a.packed} is the checkpoint itself; name another "
                                 "file to write")
    if os.path.lexists(a.packed) and not a.overwrite:
        raise errors.ConfigError(f"pack: {a.packed} exists; pass --overwrite to replace it")
    check_output(a.packed, [a.path], what="pack: the packed file")
    n = pack_files(a.path, a.packed)
    print(f"wrote {a.packed}: {n} resolution(s), self-contained")
    return EXIT_OK
