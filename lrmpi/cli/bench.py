"""`lrmpi bench NAME`: the benchmarks of lrmpi.experiments (not timed tests)."""
from lrmpi.cli.commands import command


@command
def bench(argv):
    """Benchmarks beside their peers: kernels, matmul, infer, bounds, deadline, straggler."""
    import argparse

    from lrmpi.experiments.bench import (BENCHES, bounds, deadline, infer,  # noqa: F401
                                         kernels, matmul, scale, straggler)
    p = argparse.ArgumentParser(prog="lrmpi bench", description="Benchmarks.")
    p.add_argument("name", choices=sorted(BENCHES))
    a, _ = p.parse_known_args(argv[:1])
    if any(arg == "--plot" or arg.startswith("--plot=") for arg in argv):
        from lrmpi.experiments.bench import need
        need("matplotlib", "plot", "--plot")  # before the work, not after it
    return BENCHES[a.name](argv[1:])
