"""`lrmpi bench kernels`: int8 GEMM GOPS per ISA next to numpy float64/float32 GEMM in
the same run, one thread, median of repeats; encode GB/s of float64 input."""
import argparse
import json
import os

import numpy as np

from lrmpi.experiments.bench import bench, median_time, shape_of, single_thread, parsed
from lrmpi.numerics import kernels as K


@bench
def kernels(argv):
    """int8 GEMM per ISA vs numpy GEMM; encode GB/s."""
    p = argparse.ArgumentParser(prog="lrmpi bench kernels", description=kernels.__doc__)
    p.add_argument("--sizes", default="1024,2048,4096,8192x1024x8192",
                   help="n (square) or MxKxN, comma-separated (default 1024,2048,4096,"
                        "8192x1024x8192)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--isas", default=",".join(K.available_isas()))
    p.add_argument("--json", default=None, help="also write the results to this file")
    a = parsed(p, argv)
    limiter, blas = single_thread()
    rng = np.random.default_rng(0)
    rows = []
    print(f"numpy BLAS: {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')!r}")
    print(f"{'MxKxN':>16} {'what':>16} {'seconds':>9} {'G(FL)OPS':>9} {'x f64':>6}")
    for spec in a.sizes.split(","):
        m, k, n = shape_of(spec)
        name, ops = f"{m}x{k}x{n}", 2.0 * m * k * n
        X, Y = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        t64 = median_time(lambda: X @ Y, a.repeats)
        X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
        t32 = median_time(lambda: X32 @ Y32, a.repeats)
        X32 = Y32 = Y = None  # free them before the int8 operands
        res = {"numpy float64": t64, "numpy float32": t32}
        A8 = rng.integers(-127, 128, (m, k), dtype=np.int8)
        Bt8 = rng.integers(-127, 128, (n, k), dtype=np.int8)
        C = np.zeros((m, n), np.int32)
        for isa in a.isas.split(","):
            if isa == "ref" and ops > 2.0 * 1024**3:
                continue  # the portable kernel is minutes at this size
            res[f"int8 {isa}"] = median_time(lambda: K.igemm(A8, Bt8, C, isa=isa),
                                              max(1, a.repeats // 2) if isa == "ref" else a.repeats)
        C = A8 = Bt8 = None
        exps = np.frexp(np.abs(X).max(axis=1))[1].astype(np.int32)
        t_enc = median_time(lambda: K.encode(X, exps, 7, 4), a.repeats)
        for what, t in res.items():
            rows.append({"shape": [m, k, n], "what": what, "seconds": t, "gops": ops / t / 1e9,
                         "vs_float64": t64 / t})
            print(f"{name:>16} {what:>16} {t:>9.4f} {ops / t / 1e9:>9.1f} {t64 / t:>6.2f}")
        gbs = X.nbytes / t_enc / 1e9
        rows.append({"shape": [m, k, n], "what": "encode 4 planes", "seconds": t_enc,
                     "gb_per_s": gbs})
        print(f"{name:>16} {'encode 4 planes':>16} {t_enc:>9.4f} {gbs:>7.2f} GB/s")
    if limiter is not None:
        limiter.restore_original_limits()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"blas": blas, "isa": K.selected_isa(), "rows": rows}, f, indent=1)
    return 0





