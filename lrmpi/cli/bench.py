"""`lrmpi bench NAME`: the benchmarks of lrmpi.experiments (not timed tests)."""
from lrmpi.cli import command


@command
def bench(argv):
    """Benchmarks beside their peers: kernels, matmul, infer, deadline, straggler."""
    from lrmpi.experiments import bench as benches
    return benches.main(argv)
