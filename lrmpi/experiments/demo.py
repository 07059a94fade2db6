"""The bodies of `lrmpi demo`: a layered matmul of generated matrices, and layered
inference of a digits MLP trained on the spot; each prints one line per resolution."""
import os
import tempfile
import time

import numpy as np

from lrmpi.log import logger
from lrmpi.parallel.comm import get_comm, rank_size


def matmul(n, seed, out, numeric, job):
    """A^ B of n x n matrices whose rows and columns span ~2.6 decades."""
    from lrmpi.jobs.matmul import run_matmul
    rank, size = rank_size(get_comm())
    A = B = ref = None
    logger.setLevel("WARNING")  # the demo prints its own table
    if rank == 0:
        rng = np.random.default_rng(seed)
        # rows and columns of different magnitudes: what per-row scaling is for
        A = rng.standard_normal((n, n)) * np.exp(rng.uniform(-3, 3, (n, 1)))
        B = rng.standard_normal((n, n)) * np.exp(rng.uniform(-3, 3, (1, n)))
        ref = A @ B
        print(f"lrmpi demo: C = A B, n = {n}, {numeric['planes']} planes of {numeric['bits']} "
              f"bits, order {numeric['order']}, {size} rank(s)")
        print(f"{'res':>4} {'pairs':>5} {'elapsed_s':>9} {'bound_abs':>10} {'bound_rel':>10} "
              f"{'err_rel':>10}", flush=True)

    def show(meta, C):
        err = np.abs(C - ref).max() / np.abs(ref).max()
        print(f"{meta['index']:>4} {meta['pairs']:>5} {meta['elapsed_s']:>9.3f} "
              f"{meta['bound_abs']:>10.3e} {meta['bound_rel']:>10.3e} {err:>10.3e}", flush=True)

    outcome = run_matmul(A, B, out, on_resolution=show, **numeric, **job)
    if rank == 0:
        print("err_rel: max|C_r - numpy A@B| / max|A@B| (numpy float64 is itself rounded, ~1e-16)")
    return outcome


def infer(binary, planes, adaptive, out, job):
    """The digits MLP, layered and adaptive, beside one-shot float32."""
    from lrmpi.experiments import digits
    from lrmpi.jobs.inference import run_infer
    from lrmpi.nn import ops
    from lrmpi.nn.onnx_import import load_model
    rank, size = rank_size(get_comm())
    logger.setLevel("WARNING")
    X = y = None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "digits-mlp.onnx")
        if rank == 0:
            X, y = digits.mlp_onnx(path, binary=binary)
            mdl = load_model(path)
            X32 = X.astype(np.float32)
            t = time.perf_counter()
            one = ops.forward(mdl, X32)
            t_one = time.perf_counter() - t
            pred = ops.decisions(mdl, one)
            print(f"lrmpi demo --infer: digits {'even/odd' if binary else '10-class'} MLP, "
                  f"{len(X)} test samples, {planes} planes, {size} rank(s)")
            print(f"one-shot float32: accuracy {np.mean(pred == y):.4f}  time {t_one:.4f} s")
            print(f"{'res':>4} {'elapsed_s':>9} {'refined':>7} {'work':>6} {'accuracy':>8}")
        get_comm() is not None and get_comm().Barrier()

        def show(meta, scores, predicted, refined):
            print(f"{meta['index']:>4} {meta['elapsed_s']:>9.4f} {int(refined.sum()):>7} "
                  f"{meta['work'] / meta['work_all']:>6.3f} {np.mean(predicted == y):>8.4f}",
                  flush=True)

        outcome = run_infer(path if rank == 0 else None, X, out, planes=planes,
                            rule="certified" if adaptive else "none", on_resolution=show, **job)
    if rank == 0:
        total = sum(m["work"] for m in outcome.resolutions)
        every = sum(m["work_all"] for m in outcome.resolutions)
        print(f"work: {total / every:.3f} of refining every sample at every resolution")
    return outcome
