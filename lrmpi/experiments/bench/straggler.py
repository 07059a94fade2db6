"""`lrmpi bench straggler`: time to resolution 1 with one worker F times slower."""
import argparse
import os
import statistics

import numpy as np

from lrmpi.experiments.bench import add_launcher_option, bench, checked, launcher, parsed


@bench
def straggler(argv):
    """Time to resolution 1 and to the last with one worker F times slower, vs none."""
    import sys
    import tempfile

    from lrmpi.jobs.checkpoint import Checkpoint
    p = argparse.ArgumentParser(prog="lrmpi bench straggler", description=straggler.__doc__)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--factor", type=float, default=5.0)
    p.add_argument("--planes", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    add_launcher_option(p)
    a = parsed(p, argv)
    rng = np.random.default_rng(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("A", "B"):
            np.save(os.path.join(tmp, name + ".npy"), rng.standard_normal((a.n, a.n)))
        for label, env in (("none", {}), (f"rank 1 x{a.factor:g}", {
                "LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_FACTOR": str(a.factor)})):
            first, last = [], []
            for _ in range(a.repeats):
                c = os.path.join(tmp, "c.h5")
                checked([*launcher(a, a.ranks), sys.executable, "-m", "lrmpi", "matmul",
                         os.path.join(tmp, "A.npy"), os.path.join(tmp, "B.npy"), "-o", c,
                         "--overwrite", "--planes", str(a.planes), "--no-fsync"], env=env)
                ck = Checkpoint(c)
                first.append(float(ck.resolution(1, datasets=False)[0]["elapsed_s"]))
                last.append(float(ck.last()["elapsed_s"]))
            out[label] = (statistics.median(first), statistics.median(last))
            print(f"{label:>12}: resolution 1 at {out[label][0]:.3f} s, last at "
                  f"{out[label][1]:.3f} s (median of {a.repeats})")
    (f0, l0), (f1, l1) = out.values()
    print(f"slow-down with the straggler: resolution 1 {f1 / f0:.2f}x, last {l1 / l0:.2f}x")
    return 0



