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

from lrmpi.numerics import kernels as K

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


def _blas():
    """numpy's BLAS as threadpoolctl sees it (the kernel OpenBLAS picked)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl)"
    blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')}".strip()
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(blas) or "unknown"


def _single_thread():
    """Limit BLAS to one thread if threadpoolctl is there; describe numpy's BLAS."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None, _blas()
    return threadpool_limits(1), _blas()


def _shape(spec):
    """'n' (square) or 'MxKxN' -> (m, k, n)."""
    dims = [int(x) for x in spec.lower().split("x")]
    if len(dims) == 1:
        dims *= 3
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"a size is n or MxKxN, got {spec!r}")
    return tuple(dims)


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
    a = p.parse_args(argv)
    limiter, blas = _single_thread()
    rng = np.random.default_rng(0)
    rows = []
    print(f"numpy BLAS: {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')!r}")
    print(f"{'MxKxN':>16} {'what':>16} {'seconds':>9} {'G(FL)OPS':>9} {'x f64':>6}")
    for spec in a.sizes.split(","):
        m, k, n = _shape(spec)
        name, ops = f"{m}x{k}x{n}", 2.0 * m * k * n
        X, Y = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        t64 = _median_time(lambda: X @ Y, a.repeats)
        X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
        t32 = _median_time(lambda: X32 @ Y32, a.repeats)
        del X32, Y32, Y
        res = {"numpy float64": t64, "numpy float32": t32}
        A8 = rng.integers(-127, 128, (m, k), dtype=np.int8)
        Bt8 = rng.integers(-127, 128, (n, k), dtype=np.int8)
        C = np.zeros((m, n), np.int32)
        for isa in a.isas.split(","):
            if isa == "ref" and ops > 2.0 * 1024**3:
                continue  # the portable kernel is minutes at this size
            res[f"int8 {isa}"] = _median_time(lambda: K.igemm(A8, Bt8, C, isa=isa),
                                              max(1, a.repeats // 2) if isa == "ref" else a.repeats)
        del C, A8, Bt8
        exps = np.frexp(np.abs(X).max(axis=1))[1].astype(np.int32)
        t_enc = _median_time(lambda: K.encode(X, exps, 7, 4), a.repeats)
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




@bench
def infer(argv):
    """Digits: accuracy per resolution (non-adaptive, adaptive), work, time vs one-shot."""
    import tempfile

    from lrmpi.experiments import digits
    from lrmpi.nn import model as M
    from lrmpi.nn.infer import LayeredInference
    from lrmpi.nn.onnx_import import load_model
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

    from lrmpi.jobs.checkpoint import Checkpoint
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
                                "-o", c, "--overwrite", "--planes", str(a.planes), "--no-fsync"],
                               check=True, capture_output=True, env={**os.environ, **env})
                ck = Checkpoint(c)
                first.append(float(ck.resolution(1, datasets=False)[0]["elapsed_s"]))
                last.append(float(ck.last()["elapsed_s"]))
            out[label] = (statistics.median(first), statistics.median(last))
            print(f"{label:>12}: resolution 1 at {out[label][0]:.3f} s, last at "
                  f"{out[label][1]:.3f} s (median of {a.repeats})")
    (f0, l0), (f1, l1) = out.values()
    print(f"slow-down with the straggler: resolution 1 {f1 / f0:.2f}x, last {l1 / l0:.2f}x")
    return 0


@bench
def matmul(argv):
    """Time and true error per resolution under mpiexec, beside one-shot baselines.

    lrmpi and the MPI baseline are timed from the start of the job (reading the .npy
    files included); the numpy baselines multiply arrays already in memory.
    """
    import subprocess
    import sys
    import tempfile

    from lrmpi.jobs.checkpoint import Checkpoint
    p = argparse.ArgumentParser(prog="lrmpi bench matmul", description=matmul.__doc__)
    p.add_argument("--shapes", default="1024x1024x1024,2048x2048x2048,8192x1024x512",
                   help="MxKxN list (default includes a tall-skinny one)")
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--planes", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable), "mpiexec"))
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG: error vs time, baselines as lines")
    a = p.parse_args(argv)
    blas = _blas()
    print(f"numpy BLAS: {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')!r}")
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in a.shapes.split(","):
            m, k, n = (int(x) for x in spec.split("x"))
            A = rng.standard_normal((m, k)) * np.exp(rng.uniform(-2, 2, (m, 1)))
            B = rng.standard_normal((k, n))
            fa, fb = os.path.join(tmp, "A.npy"), os.path.join(tmp, "B.npy")
            np.save(fa, A)
            np.save(fb, B)
            ref = A @ B
            refmax = np.abs(ref).max()
            row = {"shape": [m, k, n], "ranks": a.ranks}
            A32, B32 = A.astype(np.float32), B.astype(np.float32)
            row["numpy_f64_s"] = _median_time(lambda: A @ B, a.repeats)
            row["numpy_f32_s"] = _median_time(lambda: A32 @ B32, a.repeats)
            base = []
            for _ in range(a.repeats):
                out = subprocess.run([a.mpiexec, "-n", str(a.ranks), sys.executable, "-m",
                                      "lrmpi.experiments.baseline", fa, fb], check=True,
                                     capture_output=True, text=True)
                base.append(json.loads(out.stdout.strip().splitlines()[-1]))
            row["mpi_f64_s"] = statistics.median(b["seconds"] for b in base)
            row["mpi_f64_bytes"] = base[0]["bytes_sent"]
            runs = []
            for _ in range(a.repeats):
                c = os.path.join(tmp, "C.h5")
                subprocess.run([a.mpiexec, "-n", str(a.ranks), sys.executable, "-m", "lrmpi",
                                "matmul", fa, fb, "-o", c, "--overwrite", "--planes", str(a.planes),
                                "--no-fsync"], check=True, capture_output=True)
                ck, res = Checkpoint(c), []
                for i in ck.resolution_indices():
                    attrs, data = ck.resolution(i)
                    err = float(np.abs(data["C"] - ref).max() / refmax)
                    res.append({k2: float(v) for k2, v in attrs.items()
                                if isinstance(v, (int, float))} | {"err": err})
                runs.append(res)
            row["resolutions"] = [
                {key: statistics.median(r[i][key] for r in runs) for key in runs[0][i]}
                for i in range(len(runs[0]))]
            results.append(row)
            print(f"\n{m}x{k} @ {k}x{n}, {a.ranks} ranks: numpy f64 {row['numpy_f64_s']:.3f} s, "
                  f"f32 {row['numpy_f32_s']:.3f} s, one-shot MPI f64 {row['mpi_f64_s']:.3f} s "
                  f"(sends {row['mpi_f64_bytes'] / 1e6:.0f} MB)")
            print(f"{'res':>4} {'pairs':>5} {'elapsed_s':>9} {'x f64':>6} {'err_rel':>9} "
                  f"{'bound_rel':>9} {'MB sent':>8} {'MB recv':>8}")
            for r in row["resolutions"]:
                print(f"{int(r['index']):>4} {int(r['pairs']):>5} {r['elapsed_s']:>9.3f} "
                      f"{r['elapsed_s'] / row['numpy_f64_s']:>6.2f} {r['err']:>9.2e} "
                      f"{r['bound_rel']:>9.2e} {r.get('root_bytes_sent', 0) / 1e6:>8.1f} "
                      f"{r.get('root_bytes_recv', 0) / 1e6:>8.1f}")
    _save(a, {"blas": blas, "results": results}, _plot_matmul, results)
    return 0


def _plot_matmul(png, results):
    plt, fig, axes = _panels(len(results), 5)
    for ax, row in zip(axes, results):
        t = [r["elapsed_s"] for r in row["resolutions"]]
        ax.semilogy(t, [max(r["err"], 1e-17) for r in row["resolutions"]], "o-",
                    label="lrmpi true error")
        ax.semilogy(t, [r["bound_rel"] for r in row["resolutions"]], "s--", label="lrmpi bound")
        for key, style, label in (("numpy_f64_s", "k-", "numpy f64, in memory"),
                                  ("numpy_f32_s", "k:", "numpy f32, in memory"),
                                  ("mpi_f64_s", "r-", "MPI one-shot f64, from files")):
            ax.axvline(row[key], color=style[0], linestyle=style[1:] or "-", label=label)
        m, k, n = row["shape"]
        ax.set_title(f"{m}x{k} @ {k}x{n}, {row['ranks']} ranks")
        ax.set_xlabel("seconds from start")
        ax.set_ylabel("relative error")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


@bench
def deadline(argv):
    """The paper's deadline experiment, real: Poisson stream of matmul jobs under
    mpiexec, success rate vs deadline per resolution and for one-shot, with equal
    workers and with one worker F times slower (python -m lrmpi.experiments.stream)."""
    import subprocess
    import sys
    p = argparse.ArgumentParser(prog="lrmpi bench deadline", description=deadline.__doc__)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--load", type=float, default=0.5)
    p.add_argument("--planes", type=int, default=2)
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--factor", type=float, default=3.0, help="slow worker: F times slower")
    p.add_argument("--deadlines", default="0.25,0.5,0.75,1,1.5,2,3")
    p.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable), "mpiexec"))
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG: success rate vs deadline")
    a = p.parse_args(argv)
    cases = {"equal workers": {},
             f"rank 1 x{a.factor:g} slower": {"LRMPI_TEST_SLOW_RANK": "1",
                                               "LRMPI_TEST_SLOW_FACTOR": str(a.factor)}}
    results = {}
    for label, env in cases.items():
        out = subprocess.run(
            [a.mpiexec, "-n", str(a.ranks), sys.executable, "-m", "lrmpi.experiments.stream",
             "--n", str(a.n), "--jobs", str(a.jobs), "--load", str(a.load),
             "--planes", str(a.planes), "--deadlines", a.deadlines],
            check=True, capture_output=True, text=True, env={**os.environ, **env})
        doc = results[label] = json.loads(out.stdout.strip().splitlines()[-1])
        R = len(doc["service_layered_s"])
        print(f"\n{label}: n = {a.n}, {a.ranks} ranks, {a.planes} planes, {a.jobs} jobs, "
              f"load {a.load} (arrivals {doc['rate_per_s']:.1f}/s)")
        print(f"service time without queue: one-shot {doc['service_oneshot_s'] * 1e3:.1f} ms; "
              "layered " + ", ".join(f"r{r + 1} {s * 1e3:.1f} ms"
                                     for r, s in enumerate(doc["service_layered_s"])))
        lay = doc["mean_delay_layered_s"]
        print(f"mean delay in the stream without deadlines: one-shot "
              f"{doc['mean_delay_oneshot_s'] * 1e3:.1f} ms; layered "
              + ", ".join(f"r{r + 1} {d * 1e3:.1f} ms" for r, d in enumerate(lay))
              + f" (r1 / one-shot = {lay[0] / doc['mean_delay_oneshot_s']:.2f}); yielding r1 "
              f"{doc['mean_delay_yielding_r1_s'] * 1e3:.1f} ms")
        print("success rate (r = layered resolution, y = yielding: refines only while no job waits)")
        print(f"{'deadline':>9} {'x one-shot':>10} {'one-shot':>9} "
              + " ".join(f"{'r' + str(r + 1):>6}" for r in range(R)) + " "
              + " ".join(f"{'y' + str(r + 1):>6}" for r in range(R)))
        for row in doc["success"]:
            print(f"{row['deadline_s'] * 1e3:>7.1f}ms {row['deadline_factor']:>10g} "
                  f"{row['oneshot']:>9.2f} "
                  + " ".join(f"{x:>6.2f}" for x in row["layered"] + row["yielding"]))
    _save(a, results, _plot_deadline, results)
    return 0


def _save(a, doc, plot, results):
    """--json: write `doc`; --plot: draw `results` with `plot(png, results)`."""
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
    if a.plot:
        plot(a.plot, results)


def _panels(count, width):
    """A matplotlib (Agg) figure with `count` panels side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, count, figsize=(width * count, 4), squeeze=False)
    return plt, fig, axes[0]


def _plot_deadline(png, results):
    plt, fig, axes = _panels(len(results), 5.5)
    for ax, (label, doc) in zip(axes, results.items()):
        x = [row["deadline_s"] * 1e3 for row in doc["success"]]
        ax.plot(x, [row["oneshot"] for row in doc["success"]], "k-o", label="one-shot f64")
        for r in range(len(doc["service_layered_s"])):
            ax.plot(x, [row["layered"][r] for row in doc["success"]], "--s",
                    label=f"lrmpi resolution {r + 1}")
        ax.plot(x, [row["yielding"][0] for row in doc["success"]], ":^", color="C0",
                label="lrmpi resolution 1, yielding")
        ax.set_xlabel("deadline after arrival (ms)")
        ax.set_ylabel("jobs with that result in time")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{label}: n = {doc['n']}, {doc['ranks']} ranks, load {doc['load']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
