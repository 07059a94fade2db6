"""`lrmpi jobscript`: a ready SLURM script for an lrmpi job, printed on stdout."""
import os
import re
import shlex
import sys

from lrmpi import errors
from lrmpi.cli.commands import EXIT_OK, command, parser

# lrmpi options the scripts pass themselves (left out of OPTIONS): --resume (or
# --overwrite on the first run), --deadline-ok (DEADLINE_OK), requeueing, and -o
SCRIPT_OWNS = {"output", "resume", "requeue", "max_restarts", "deadline_ok", "debug", "help"}


@command
def jobscript(argv):
    """Print a SLURM job script for `lrmpi matmul` or `lrmpi infer` (ranks started by srun,
    or by the mpiexec of mpi4py's MPI): inputs, output and this Python as absolute paths;
    every other option is the job's.  lrmpi jobscript matmul A.npy B.npy -o C.h5 --planes 6
    --ntasks 8 --time 2:00:00 > job.sbatch && sbatch job.sbatch"""
    from lrmpi import jobscripts
    p = parser("jobscript", jobscript)
    p.allow_abbrev = False  # a prefix of an lrmpi option must not be taken for ours
    p.add_argument("kind", choices=sorted(jobscripts.KINDS),
                   help="the job, and its launcher: srun (matmul, infer) or mpiexec")
    p.add_argument("--ntasks", type=int, default=3, help="MPI ranks: one root + workers "
                   "(default 3)")
    p.add_argument("--time", default="00:30:00", help="wall-clock limit, SLURM's --time "
                   "(default 00:30:00)")
    p.add_argument("--job-name", default=None, help="SLURM job name (default lrmpi-KIND)")
    p.add_argument("--max-restarts", type=int, default=3,
                   help="requeues at the time limit, at most (default 3)")
    p.add_argument("--python", default=sys.executable,
                   help="the Python with lrmpi installed (default: this one)")
    p.add_argument("--srun-mpi", default=None, help="srun --mpi= plugin (default: pmix for "
                   "Open MPI, pmi2 otherwise, after the MPI that mpi4py loads)")
    p.add_argument("--mpiexec", default=None, help="*-mpiexec kinds: the launcher (default: "
                   "the mpiexec of mpi4py's MPI, as `lrmpi info` shows)")
    p.add_argument("--site-env", default=None, metavar="FILE",
                   help="a file the script sources first (module loads, a venv)")
    p.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="one more #SBATCH option, e.g. --sbatch=--partition=long (repeatable)")
    p.add_argument("--no-deadline-ok", dest="deadline_ok", action="store_false",
                   help="a stop at the deadline exits 3 (default: 0 when a resolution of "
                        "these inputs is on disk; 4, nothing on disk, is never 0)")
    p.add_argument("--template", action="store_true",
                   help="print the template as shipped (what the repository's jobscripts/ "
                        "holds), nothing filled in")
    a, rest = p.parse_known_args(argv)
    template, command_name = jobscripts.KINDS[a.kind]
    if a.template:
        sys.stdout.write(jobscripts.template(template))
        return EXIT_OK
    inputs, out, options, ns = _job(command_name, rest)
    if ns.deadline_ok and not a.deadline_ok:
        raise errors.ConfigError("--deadline-ok and --no-deadline-ok contradict each other: "
                                 "give one (the scripts' default is --deadline-ok)")
    knobs = {"KIND": command_name, "INPUTS": [_absolute(s) for s in inputs],
             "OUT": os.path.abspath(out), "OPTIONS": options, "PYTHON": _program(a.python),
             "MAX_RESTARTS": str(_at_least(a.max_restarts, 0, "--max-restarts")),
             "SITE_ENV": _site_env(a.site_env), "DEADLINE_OK": "yes" if a.deadline_ok else "no"}
    if template == "srun.sbatch":
        knobs["MPI"] = a.srun_mpi or _srun_plugin()
    else:
        knobs["MPIEXEC"] = _program(a.mpiexec) if a.mpiexec else _mpiexec()
    # #SBATCH lines are comments to bash: a newline or blank in a value would end one
    own = jobscripts.sbatch_names(jobscripts.template(template))
    for opt in a.sbatch:
        if not opt.startswith("--") or not _one_word(opt):
            raise errors.ConfigError(f"--sbatch {opt!r}: expected one option such as "
                                     f"--partition=long")
        name = opt[2:].split("=", 1)[0]
        if name in own or name.removeprefix("no-") in own:  # sbatch would keep one of two
            ours = {"job-name": "--job-name", "ntasks": "--ntasks", "time": "--time"}
            raise errors.ConfigError(
                f"--sbatch {opt!r}: the script sets --{name.removeprefix('no-')} itself"
                + (f" (give jobscript's {ours[name]})" if name in ours else
                   " (its stop and requeue protocol needs it as it is)"))
    if not _SLURM_TIME.fullmatch(a.time):
        raise errors.ConfigError(f"--time {a.time!r}: expected SLURM's MINUTES, M:S, H:M:S, "
                                 f"D-H, D-H:M or D-H:M:S")
    for flag, value in (("--time", a.time), ("--job-name", a.job_name)):
        if value is not None and not _one_word(value):
            raise errors.ConfigError(f"{flag} {value!r}: expected one word")
    name = a.job_name or f"lrmpi-{command_name}"
    sbatch = {"job-name": name, "ntasks": _at_least(a.ntasks, 1, "--ntasks"),
              "time": a.time, "output": f"{name}-%j.log"}
    from lrmpi._version import __version__
    said = shlex.join(argv).encode("unicode_escape").decode("ascii")  # no newline ends it
    header = [f"written by lrmpi {__version__}: lrmpi jobscript {said}"]
    sys.stdout.write(jobscripts.fill(jobscripts.template(template), knobs, sbatch,
                                     a.sbatch, header))
    return EXIT_OK


def _job(command_name, argv):
    """(inputs, output, OPTIONS, namespace) of an lrmpi matmul / infer command line,
    checked by that command's own parser; OPTIONS as the words of the options that
    differ from their defaults, less those the script passes itself."""
    from lrmpi.cli import jobs
    p = jobs.matmul_parser() if command_name == "matmul" else jobs.infer_parser()
    ns = p.parse_args(argv)
    jobs.job_options(ns)  # the same checks as the job's own start
    _in_range(ns)
    if command_name == "matmul":
        jobs.numeric_options(ns)
        inputs = [ns.A, ns.B]
    else:
        jobs.infer_options(ns)
        inputs = [ns.model, ns.data]
    if not ns.output:
        raise errors.ConfigError("-o OUT is needed: the job's checkpoint, also its result")
    return inputs, ns.output, _options(p, ns), ns


def _in_range(ns):
    """What the job would refuse at its start, refused now: not after the queue's wait."""
    from lrmpi.jobs import deadline
    from lrmpi.numerics import crt, validate
    validate.bits(ns.bits)
    validate.planes(ns.planes)
    if getattr(ns, "moduli", None) is not None:
        crt.plan(ns.moduli)
    if ns.deadline is not None:
        deadline.parse(ns.deadline)


# SLURM's --time: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or no limit
_SLURM_TIME = re.compile(r"\d+|\d+:\d+(:\d+)?|\d+-\d+(:\d+){0,2}|unlimited|infinite", re.I)


def _options(p, ns):
    words, done = [], set()
    for action in p._actions:  # argparse keeps no public list of its actions
        if not action.option_strings or action.dest in SCRIPT_OWNS or action.dest in done:
            continue
        value = getattr(ns, action.dest)
        if value == action.default:
            continue
        if action.nargs == 0:  # a flag (--no-adaptive, --no-cutoff: infer/matmul read them)
            words.append(action.option_strings[-1])
        elif str(value).startswith("-"):  # one word: as two, the script's parser would read
            words.append(f"{action.option_strings[-1]}={value}")  # an option, its loop --overwrite
        else:
            words += [action.option_strings[-1], str(value)]
        done.add(action.dest)
    return words


def _one_word(value):
    return value != "" and all(c.isprintable() and not c.isspace() for c in value)


def _absolute(spec):
    """An input as an absolute path (FILE.h5:/dataset keeps its dataset)."""
    from lrmpi.jobs.inputs import split_spec
    path, dataset = split_spec(spec)
    return os.path.abspath(path) + (f":{dataset}" if dataset is not None else "")


def _program(name):
    """--python / --mpiexec as the script runs it: a path (with a slash) made absolute,
    since the script starts in the submitting folder, not this one; a bare name stays
    a name, found on the PATH of the node (after --site-env, which may set it)."""
    return os.path.abspath(name) if os.sep in name else name


def _site_env(path):
    if not path:
        return ""
    if not os.path.isfile(path):
        raise errors.ConfigError(f"--site-env {path}: no such file")
    return os.path.abspath(path)


def _at_least(value, low, name):
    if value < low:
        raise errors.ConfigError(f"{name} must be >= {low}, got {value}")
    return value


def _library():
    from lrmpi.parallel import comm
    return comm.library(probe=True)


def _srun_plugin():
    lib = _library()
    return "pmix" if lib is not None and lib["family"] == "openmpi" else "pmi2"


def _mpiexec():
    from lrmpi.parallel import launcher
    lib = _library()
    exe = launcher.find_mpiexec(lib)
    if exe is None:
        what = f"mpi4py's MPI ({lib['version']})" if lib else "mpi4py's MPI (not installed)"
        raise errors.ConfigError(f"no mpiexec of {what} found: pass --mpiexec")
    return exe
