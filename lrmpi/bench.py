"""Benchmarks behind `lrmpi bench NAME` (benchmarks, not timed tests).

`kernels`: int8 GEMM GOPS per kernel ISA next to numpy float64/float32 GEMM in
the same run, one thread, median of repeats; encode throughput in GB/s of
float64 input. Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, or
numpy is measured on its slower AVX2 kernel (the table says which ran).
"""
import argparse
import json
import os
import statistics
import time

import numpy as np

from lrmpi import kernels

BENCHES = {}


def bench(func):
    BENCHES[func.__name__] = func
    return func


def _median_time(fn, repeats):
    fn()  # warm-up: first touch of buffers, code paths
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _single_thread():
    """Limit BLAS to one thread if threadpoolctl is there; describe numpy's BLAS."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return None, "unknown (pip install threadpoolctl)"
    limiter = threadpool_limits(1)
    blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')}".strip()
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return limiter, "; ".join(blas) or "unknown"


@bench
def kernels_(argv):
    """int8 GEMM per ISA vs numpy GEMM; encode GB/s."""
    p = argparse.ArgumentParser(prog="lrmpi bench kernels", description=kernels_.__doc__)
    p.add_argument("--sizes", default="1024,2048", help="square sizes n (default 1024,2048)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--isas", default=",".join(kernels.available_isas()))
    p.add_argument("--json", default=None, help="also write the results to this file")
    a = p.parse_args(argv)
    limiter, blas = _single_thread()
    rng = np.random.default_rng(0)
    rows = []
    print(f"numpy BLAS: {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')!r}")
    print(f"{'n':>6} {'what':>16} {'seconds':>9} {'G(FL)OPS':>9} {'x f64':>6}")
    for n in [int(x) for x in a.sizes.split(",")]:
        ops = 2.0 * n**3
        X = rng.standard_normal((n, n))
        t64 = _median_time(lambda: X @ X, a.repeats)
        X32 = X.astype(np.float32)
        t32 = _median_time(lambda: X32 @ X32, a.repeats)
        res = {"numpy float64": t64, "numpy float32": t32}
        A8 = rng.integers(-127, 128, (n, n), dtype=np.int8)
        C = np.zeros((n, n), np.int32)
        for isa in a.isas.split(","):
            if isa == "ref" and n > 1024:
                continue  # the portable kernel is minutes at this size
            res[f"int8 {isa}"] = _median_time(lambda: kernels.igemm(A8, A8, C, isa=isa),
                                              max(1, a.repeats // 2) if isa == "ref" else a.repeats)
        exps = np.frexp(np.abs(X).max(axis=1))[1].astype(np.int32)
        t_enc = _median_time(lambda: kernels.encode(X, exps, 7, 4), a.repeats)
        for what, t in res.items():
            rows.append({"n": n, "what": what, "seconds": t, "gops": ops / t / 1e9,
                         "vs_float64": t64 / t})
            print(f"{n:>6} {what:>16} {t:>9.4f} {ops / t / 1e9:>9.1f} {t64 / t:>6.2f}")
        gbs = X.nbytes / t_enc / 1e9
        rows.append({"n": n, "what": "encode 4 planes", "seconds": t_enc, "gb_per_s": gbs})
        print(f"{n:>6} {'encode 4 planes':>16} {t_enc:>9.4f} {gbs:>7.2f} GB/s")
    if limiter is not None:
        limiter.restore_original_limits()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"blas": blas, "rows": rows}, f, indent=1)
    return 0


BENCHES["kernels"] = BENCHES.pop("kernels_")


def main(argv):
    p = argparse.ArgumentParser(prog="lrmpi bench", description="Benchmarks.")
    p.add_argument("name", choices=sorted(BENCHES))
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv[:1])
    return BENCHES[a.name](argv[1:])
