"""`lrmpi matmul` and `lrmpi infer`, and the options they share (also with demo)."""
from lrmpi import errors
from lrmpi.cli.commands import command, exit_code, parser


def add_plane_options(p, planes):
    p.add_argument("--bits", type=int, default=7, help="bits per digit plane, 1..7 (default 7)")
    p.add_argument("--planes", type=int, default=planes,
                   help=f"digit planes per operand, 1..16 (default {planes})")


def add_numeric_options(p, planes=4):
    add_plane_options(p, planes)
    p.add_argument("--order", default="antidiagonal",
                   help="how pair products form resolutions: antidiagonal (default), "
                        "pairwise, lshape")
    p.add_argument("--cutoff", type=int, default=None,
                   help="skip pairs of level p+q-1 > CUTOFF (default: none)")
    p.add_argument("--no-cutoff", action="store_true", help="include every pair")
    p.set_defaults(default_cutoff=None)  # demo's is 9
    p.add_argument("--scale", default="row",
                   help="power-of-two scale per row of A / column of B (row, default) or "
                        "one per operand (tensor)")
    p.add_argument("--final", default=None, choices=("crt",),
                   help="after the layers, one more resolution by the CRT (Ozaki scheme "
                        "II): float64 grade from --moduli int8 products")
    p.add_argument("--moduli", type=int, default=None,
                   help="moduli of the CRT resolution, 1..16 (default: from --target)")
    p.add_argument("--target", default=None,
                   help="the fewest moduli whose rigorous bound_rel is shown to reach it: "
                        "fp64 (8.9e-16; the default, else all 16 moduli), fp32 (6e-8), or a "
                        "relative error such as 1e-12 (refused if out of reach)")


def add_job_options(p):
    p.add_argument("-o", "--output", default=None,
                   help="HDF5 checkpoint to write (without it, results are not kept)")
    p.add_argument("--deadline", default=None,
                   help="stop by then: a duration (90 = 90 seconds: a bare number is seconds, "
                        "not minutes as in SLURM; 90s, 5m, 1h30m or 1h 30m; SLURM's M:S, "
                        "H:M:S, D-H, D-H:M, D-H:M:S) or a time (2026-11-27T18:00, @EPOCH); inside SLURM "
                        "the job's end time applies too")
    p.add_argument("--margin", type=float, default=None,
                   help="seconds kept free before the deadline, >= 0 (default: 10%% of the "
                        "time, at most 10 s)")
    p.add_argument("--resume", action="store_true",
                   help="continue the checkpoint in -o if it matches the inputs")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing result in -o (it stays until this run has one "
                        "at least as good)")
    p.add_argument("--requeue", action="store_true",
                   help="inside SLURM: when stopped by the deadline, scontrol requeue the job "
                        "(run it with --resume)")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="requeue at most this many times (SLURM_RESTART_COUNT; default 3)")
    p.add_argument("--worker-timeout", type=float, default=None,
                   help="seconds a worker may sit on one task before the job is failed as hung "
                        "(default: 20 times the longest task so far, at least 30 s)")
    p.add_argument("--keep", default=None, choices=("all", "latest"),
                   help="resolution files to keep: all (default), or only the latest (plus "
                        "the exact resume data until the job is complete); the job file "
                        "lists what is kept (a resumed job keeps what it began with)")
    p.add_argument("--deadline-ok", action="store_true",
                   help="exit 0 instead of 3 when stopped by the deadline or a signal with a "
                        "resolution of these inputs on disk (SLURM: a success for afterok "
                        "chains); a stop with none still exits 4")
    p.add_argument("--no-fsync", dest="fsync", action="store_false",
                   help="skip fsync of checkpoints (still safe against process kills, "
                        "not against a node crash)")


def job_options(a):
    if a.worker_timeout is not None and not 0 < a.worker_timeout < float("inf"):  # nan too
        raise errors.ConfigError(f"--worker-timeout must be a number of seconds > 0, got "
                                 f"{a.worker_timeout}")
    if a.max_restarts < 0:
        raise errors.ConfigError(f"--max-restarts must be >= 0, got {a.max_restarts}")
    if a.overwrite and a.resume:  # here too: `lrmpi jobscript` checks with this
        raise errors.ConfigError("--resume and --overwrite exclude each other")
    if getattr(a, "output", None) is None:  # options about a checkpoint, and there is none
        for flag, given in (("--resume", a.resume), ("--overwrite", a.overwrite),
                            (f"--keep {a.keep}", a.keep is not None),
                            ("--write ranks", getattr(a, "write", "root") != "root")):
            if given:
                raise errors.ConfigError(f"{flag} is about the checkpoint, and there is none: "
                                         "give -o OUT.h5")
    return dict(worker_timeout=a.worker_timeout, deadline=a.deadline, time_margin=a.margin,
                resume=a.resume, overwrite=a.overwrite, fsync=a.fsync, requeue=a.requeue,
                max_restarts=a.max_restarts, keep=a.keep)


def numeric_options(a):
    target = a.target
    if target is not None and target not in ("fp64", "fp32"):
        try:
            target = float(target)
        except ValueError:
            raise errors.ConfigError(f"--target must be fp64, fp32 or a number, got "
                                     f"{a.target!r}") from None
        if not 0 < target < 1:  # nan too
            raise errors.ConfigError(f"--target must be a relative error in (0, 1), got "
                                     f"{a.target}")
    if a.cutoff is not None and a.no_cutoff:
        raise errors.ConfigError(f"--cutoff {a.cutoff} and --no-cutoff contradict each other: "
                                 "give one")
    if a.moduli is not None and a.target is not None:
        raise errors.ConfigError("--moduli and --target both choose the CRT resolution's "
                                 "moduli: give one")
    cutoff = None if a.no_cutoff else a.cutoff if a.cutoff is not None else a.default_cutoff
    return dict(bits=a.bits, planes=a.planes, order=a.order, cutoff=cutoff, scale=a.scale,
                final=a.final, moduli=a.moduli, target=target)


def matmul_parser():
    p = parser("matmul", matmul)
    p.add_argument("A", help="left operand: A.npy or FILE.h5:/dataset")
    p.add_argument("B", help="right operand: B.npy or FILE.h5:/dataset")
    add_numeric_options(p)
    add_job_options(p)
    p.add_argument("--write", default="root", choices=("root", "ranks"),
                   help="who writes C and the resume data: the root (default), or each "
                        "worker its own tiles, bound by a virtual dataset (many nodes, a "
                        "shared file system: the root no longer receives or writes C)")
    return p


@command
def matmul(argv):
    """C = A B in layers of increasing resolution, over every MPI rank."""
    a = matmul_parser().parse_args(argv)
    from lrmpi.jobs.matmul import run_matmul
    return exit_code(run_matmul(a.A, a.B, a.output, **numeric_options(a), **job_options(a),
                                write=a.write), a.deadline_ok)


def add_infer_options(p):
    add_plane_options(p, 4)
    p.add_argument("--rule", default=None, choices=("certified", "gray", "none"),
                   help="which samples are refined further: certified (default: until the "
                        "bounds prove the decision equals the full-precision model's), gray "
                        "(the paper's: inside the gray zone / below the class margin), none "
                        "(every sample at every resolution)")
    p.add_argument("--no-adaptive", action="store_true", help="the same as --rule none")
    p.add_argument("--gray", default=None,
                   help="--rule gray, one sigmoid score: refine inside LO,HI (default 0.3,0.6)")
    p.add_argument("--class-margin", type=float, default=None,
                   help="--rule gray, multi-class: refine while top-1 minus top-2 probability "
                        "< this, in 0..1 (default 0.1)")


def infer_options(a):
    """The engine's options; options that contradict each other, or that the rule in
    force ignores, are refused (one line) rather than silently dropped."""
    if a.no_adaptive and a.rule not in (None, "none"):
        raise errors.ConfigError(f"--no-adaptive (the same as --rule none) contradicts --rule "
                                 f"{a.rule}: give one")
    rule = "none" if a.no_adaptive else a.rule or "certified"
    for name, value in (("--gray", a.gray), ("--class-margin", a.class_margin)):
        if value is not None and rule != "gray":
            raise errors.ConfigError(f"{name} applies to --rule gray only; this run has --rule "
                                     f"{rule}")
    gray = a.gray if a.gray is not None else "0.3,0.6"
    try:
        lo, hi = (float(x) for x in gray.split(","))
    except ValueError:
        raise errors.ConfigError(f"--gray {gray!r}: expected LO,HI such as 0.3,0.6") from None
    if not 0 <= lo <= hi <= 1:  # nan too
        raise errors.ConfigError(f"--gray {gray!r}: expected 0 <= LO <= HI <= 1")
    return dict(bits=a.bits, planes=a.planes, rule=rule, gray=(lo, hi),
                class_margin=0.1 if a.class_margin is None else a.class_margin)


def infer_parser():
    p = parser("infer", infer)
    p.add_argument("model", help="MODEL.onnx or lrmpi weights MODEL.npz")
    p.add_argument("data", help="samples: DATA.npy or FILE.h5:/dataset (first axis = samples; "
                                "each sample of the model's input shape, or a flat vector of "
                                "that many values)")
    p.add_argument("--model-output", default=None, metavar="NAME",
                   help="the model's output holding the scores (required when it has several "
                        "float outputs)")
    add_infer_options(p)
    add_job_options(p)
    return p


@command
def infer(argv):
    """Layered inference of an ONNX (or lrmpi .npz) model on DATA, over every MPI rank."""
    a = infer_parser().parse_args(argv)
    from lrmpi.jobs.inference import run_infer
    return exit_code(run_infer(a.model, a.data, a.output, model_output=a.model_output,
                               **infer_options(a), **job_options(a)), a.deadline_ok)
