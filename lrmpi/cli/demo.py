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
    given = _no_other_demos_options(p, argv, a.infer)
    from lrmpi.experiments import demo as bodies
    if a.infer:
        planes = a.planes if "planes" in given else 4
        return exit_code(bodies.infer(a.binary, planes, a.adaptive, a.output, job_options(a)),
                         a.deadline_ok)
    if a.n < 1:
        raise errors.ConfigError(f"--n must be >= 1, got {a.n}")
    return exit_code(bodies.matmul(a.n, a.seed, a.output, numeric_options(a), job_options(a)),
                     a.deadline_ok)


INFER_ONLY = {"binary": "--binary", "adaptive": "--no-adaptive"}


def _no_other_demos_options(p, argv, infer):
    """Refuse the options the chosen demo does not use (the matmul's numeric options,
    --n and --seed with --infer; --binary and --no-adaptive without it): an option is
    never dropped without a word. Given means on the command line, whatever its value:
    parsed into a namespace whose every option is preset (argparse fills in defaults
    only where nothing is set), so abbreviations and --opt=value count too. Returns
    the names (dests) given."""
    import argparse
    unset = object()
    probe = argparse.Namespace(**{x.dest: unset for x in p._actions if x.dest != "help"})
    p.parse_args(argv, namespace=probe)
    given = {d for d, v in vars(probe).items() if v is not unset}
    if infer:
        numeric = argparse.ArgumentParser(add_help=False)  # the matmul's own options only
        add_numeric_options(numeric)
        matmul_only = {x.dest: x.option_strings[-1] for x in numeric._actions
                       if x.option_strings and x.dest != "planes"}
        matmul_only.update({"n": "--n", "seed": "--seed"})
        bad = [opt for d, opt in matmul_only.items() if d in given]
        if bad:
            raise errors.ConfigError(f"{bad[0]} is an option of the matmul demo, not of "
                                     "--infer (which takes --planes and the job options)")
    else:
        bad = [opt for d, opt in INFER_ONLY.items() if d in given]
        if bad:
            raise errors.ConfigError(f"{bad[0]} goes with --infer (the inference demo)")
    return given
