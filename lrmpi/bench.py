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


@bench
def infer(argv):
    """Digits: accuracy per resolution (non-adaptive, adaptive), work, time vs one-shot."""
    import tempfile

    from lrmpi import digits, model as M
    from lrmpi.infer import LayeredInference
    from lrmpi.onnx_import import load_model
    p = argparse.ArgumentParser(prog="lrmpi bench infer", description=infer.__doc__)
    p.add_argument("--planes", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("mlp10", "mlp-even-odd", "cnn"):
            path = os.path.join(tmp, name + ".onnx")
            X, y = digits.cnn_onnx(path) if name == "cnn" else \
                digits.mlp_onnx(path, binary=name == "mlp-even-odd")
            mdl = load_model(path)
            X32 = X.astype(np.float32)
            t_one = _median_time(lambda: M.forward(mdl, X32), a.repeats)
            one = M.forward(mdl, X32)
            acc_one = float(np.mean(((one[:, 0] > 0.5) if one.shape[1] == 1
                                     else one.argmax(1)) == y))
            print(f"{name}: {len(X)} test samples; one-shot float32 accuracy {acc_one:.4f}, "
                  f"{t_one * 1e3:.2f} ms")
            for adaptive in (False, True):
                def run():
                    return list(LayeredInference(mdl, X, planes=a.planes, adaptive=adaptive))
                res = run()
                t_first = _median_time(lambda: next(iter(LayeredInference(
                    mdl, X, planes=a.planes, adaptive=adaptive))), a.repeats)
                t_all = _median_time(run, a.repeats)
                work = sum(r.work for r in res) / sum(r.work_all for r in res)
                accs = [float(np.mean(r.predicted == y)) for r in res]
                print(f"  {'adaptive' if adaptive else 'all     '}  accuracy per resolution "
                      + " ".join(f"{x:.4f}" for x in accs)
                      + f"  refined {[int(r.refined.sum()) for r in res]}  work {work:.3f}"
                      f"  first {t_first * 1e3:.2f} ms  all {t_all * 1e3:.2f} ms")
                rows.append({"model": name, "adaptive": adaptive, "accuracy": accs,
                             "accuracy_one_shot_f32": acc_one, "work_fraction": work,
                             "refined": [int(r.refined.sum()) for r in res],
                             "t_first_s": t_first, "t_all_s": t_all, "t_one_shot_s": t_one})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def main(argv):
    p = argparse.ArgumentParser(prog="lrmpi bench", description="Benchmarks.")
    p.add_argument("name", choices=sorted(BENCHES))
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv[:1])
    return BENCHES[a.name](argv[1:])


@bench
def straggler(argv):
    """Time to resolution 1 and to the last with one worker F times slower, vs none."""
    import subprocess
    import sys
    import tempfile

    import h5py
    p = argparse.ArgumentParser(prog="lrmpi bench straggler", description=straggler.__doc__)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--factor", type=float, default=5.0)
    p.add_argument("--planes", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable), "mpiexec"))
    a = p.parse_args(argv)
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
                subprocess.run([a.mpiexec, "-n", str(a.ranks), sys.executable, "-m", "lrmpi",
                                "matmul", os.path.join(tmp, "A.npy"), os.path.join(tmp, "B.npy"),
                                "-o", c, "--planes", str(a.planes), "--no-fsync"],
                               check=True, capture_output=True, env={**os.environ, **env})
                with h5py.File(c, "r") as f:
                    g = f["resolutions"]
                    first.append(float(g["001"].attrs["elapsed_s"]))
                    last.append(float(g[sorted(g)[-1]].attrs["elapsed_s"]))
            out[label] = (statistics.median(first), statistics.median(last))
            print(f"{label:>12}: resolution 1 at {out[label][0]:.3f} s, last at "
                  f"{out[label][1]:.3f} s (median of {a.repeats})")
    (f0, l0), (f1, l1) = out.values()
    print(f"slow-down with the straggler: resolution 1 {f1 / f0:.2f}x, last {l1 / l0:.2f}x")
    return 0
