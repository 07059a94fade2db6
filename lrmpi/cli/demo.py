"""`lrmpi demo`: an embedded default job that needs no input files."""
from lrmpi import errors
from lrmpi.cli.commands import command, exit_code, parser
from lrmpi.cli.jobs import add_job_options, add_numeric_options, job_options, numeric_options


@command
def demo(argv):
    """A layered matmul on generated matrices (or --infer): one line per resolution."""
    p = parser("demo", demo)
    p.add_argument("--n", type=int, default=1024, help="matrix size n x n (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the matrices")
    add_numeric_options(p, planes=8)
    add_job_options(p)
    p.add_argument("--infer", action="store_true",
                   help="layered inference of a digits MLP instead of a matmul")
    p.add_argument("--binary", action="store_true", help="with --infer: the even/odd task")
    p.add_argument("--no-adaptive", dest="adaptive", action="store_false",
                   help="with --infer: refine every sample")
    # 8 planes of 7 bits hold all 53 bits of a double; pairs past level 9 add
    # nothing measurable (the Ozaki triangle), so the demo stops there
    p.set_defaults(default_cutoff=9)
    a = p.parse_args(argv)
    from lrmpi.experiments import demo as bodies
    if a.infer:
        planes = a.planes if "--planes" in " ".join(argv) else 4
        return exit_code(bodies.infer(a.binary, planes, a.adaptive, a.output, job_options(a)),
                         a.deadline_ok)
    if a.n < 1:
        raise errors.ConfigError(f"--n must be >= 1, got {a.n}")
    return exit_code(bodies.matmul(a.n, a.seed, a.output, numeric_options(a), job_options(a)),
                     a.deadline_ok)
