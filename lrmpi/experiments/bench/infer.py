"""`lrmpi bench infer`: layered inference beside onnxruntime float32 and int8.

(a) accuracy: the digits models (trained with scikit-learn), accuracy and
    certified fraction per resolution for each rule, in one process;
(b) speed: generated models (random weights, random inputs) run as a user runs
    them, `mpiexec -n RANKS lrmpi infer MODEL X.npy -o OUT.h5`, each resolution's
    elapsed and durable times read from the checkpoint (from the job's start,
    model loaded); onnxruntime float32 and `quantize_dynamic` int8 over
    `session.run` with RANKS intra-op threads, medians of --repeats. Decisions
    at the last resolution compared with onnxruntime float32, and the certified
    ones with the float64 model.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from lrmpi.experiments.bench import (add_launcher_option, bench, checked, describe, launcher,
                                     machine, need, panels, save)

SPEED = {  # name: (builder, samples) -- the sizes
    "mlp": ("mlp", 32768),
    "vgg": ("vgg_small", 8192),
    "resnet18": ("resnet18", 2048),
}


@bench
def infer(argv):
    """Layered inference: accuracy per resolution (digits) and time to each durable
    resolution beside onnxruntime float32 / int8 (generated models)."""
    p = argparse.ArgumentParser(prog="lrmpi bench infer", description=infer.__doc__)
    p.add_argument("--planes", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--models", default="mlp,vgg",
                   help=f"speed models, comma-separated, of {', '.join(SPEED)}; '' for none")
    p.add_argument("--samples", type=float, default=1.0,
                   help="fraction of each speed model's sample count (quick runs)")
    p.add_argument("--no-accuracy", action="store_true", help="skip the digits table")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds: run each lrmpi job under --deadline (a user's time limit; "
                        "the table shows the resolutions that were durable by then)")
    add_launcher_option(p)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    a = p.parse_args(argv)
    models = [name for name in a.models.split(",") if name]
    for name in models:
        if name not in SPEED:
            p.error(f"unknown model {name!r}; choose from {', '.join(SPEED)}")
    if models:  # every missing piece named now, in one line, before any work
        need("onnxruntime", "bench", "lrmpi bench infer")
        need("onnx", "infer", "lrmpi bench infer")
        launcher(a, a.ranks)
    if not a.no_accuracy:
        for module in ("onnx", "sklearn"):
            need(module, "infer", "lrmpi bench infer (the digits accuracy table)")
    m = machine()
    print(describe(m))
    doc = {"machine": m, "planes": a.planes, "ranks": a.ranks, "accuracy": [], "speed": []}
    if not a.no_accuracy:
        doc["accuracy"] = accuracy_table(a.planes)
    for name in models:
        doc["speed"].append(speed_row(name, a))
    save(a, doc, _plot, doc["speed"])
    return 0


def accuracy_table(planes):
    """Digits models: accuracy, certified fraction, work per resolution per rule."""
    from lrmpi.experiments import digits
    from lrmpi.nn import ops
    from lrmpi.nn.engine import LayeredInference, PreparedModel
    from lrmpi.nn.onnx_import import load_model
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("mlp10", "mlp-even-odd", "cnn"):
            path = os.path.join(tmp, name + ".onnx")
            X, y = digits.cnn_onnx(path) if name == "cnn" else \
                digits.mlp_onnx(path, binary=name == "mlp-even-odd")
            g = load_model(path)
            acc64 = float(np.mean(ops.decisions(g, ops.forward(g, X)) == y))
            model = PreparedModel(g, 7, planes)
            print(f"{name}: {len(X)} test samples, float64 accuracy {acc64:.4f}")
            for rule in ("none", "certified", "gray"):
                eng = LayeredInference(model, X, planes=planes, rule=rule)
                res, accs, certs = [], [], []
                for step in eng:
                    res.append(step)
                    accs.append(float(np.mean(eng.state["predicted"] == y)))
                    certs.append(float(np.mean(eng.state["certified"])))
                work = sum(r.work for r in res) / sum(r.work_all for r in res)
                print(f"  {rule:9s} accuracy " + " ".join(f"{x:.4f}" for x in accs)
                      + "  certified " + " ".join(f"{x:.3f}" for x in certs)
                      + f"  refined {[int(r.refined.sum()) for r in res]}  work {work:.3f}")
                rows.append({"model": name, "rule": rule, "accuracy": accs,
                             "accuracy_float64": acc64, "certified": certs,
                             "refined": [int(r.refined.sum()) for r in res],
                             "work_fraction": work})
    return rows


def speed_row(name, a):
    from lrmpi.experiments import models
    builder, count = SPEED[name]
    count = max(1, int(count * a.samples))
    with tempfile.TemporaryDirectory() as tmp:
        proto = getattr(models, builder)()
        path = models.save(proto, os.path.join(tmp, "m.onnx"))
        shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
        X = np.random.default_rng(1).standard_normal((count, *shape)).astype(np.float32)
        np.save(os.path.join(tmp, "x.npy"), X)
        f32, ref32 = ort_time(path, X, a.ranks, a.repeats)
        q8, _ = ort_time(quantized(path, tmp), X, a.ranks, a.repeats)
        print(f"{name}: {count} samples; onnxruntime float32 {f32:.3f} s, int8 {q8:.3f} s "
              f"({a.ranks} threads)")
        runs = [lrmpi_run(path, os.path.join(tmp, "x.npy"), os.path.join(tmp, "o.h5"), a)
                for _ in range(a.repeats)]
        row = {"model": name, "samples": count, "ort_f32_s": f32, "ort_int8_s": q8,
               "resolutions": _medians(runs)}
        last = runs[-1]
        row.update(_agreement(path, X, ref32, last))
        for r in row["resolutions"]:
            print(f"  r{r['index']}: elapsed {r['elapsed_s']:.2f} s, durable "
                  f"{r['durable_s']:.2f} s = {r['durable_s'] / q8:.2f}x ort int8, "
                  f"{r['durable_s'] / f32:.2f}x ort f32; certified {r['certified']:.3f}, "
                  f"refined {r['refined']}, median bound/logit range {r['bound_rel']:.2e}")
        print(f"  last durable resolution: decisions = ort float32 on {row['agree_ort_f32']:.4%}, "
              f"certified = float64 model on {row['certified_agree_f64']:.4%} "
              f"of {row['certified_n']}")
        return row


def ort_time(path, X, threads, repeats):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    out = s.run(None, {name: X})[0]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        s.run(None, {name: X})
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def quantized(path, tmp):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    out = os.path.join(tmp, "m8.onnx")
    quantize_dynamic(path, out, weight_type=QuantType.QInt8)
    return out


def lrmpi_run(model, data, out, a):
    """One `mpiexec -n RANKS lrmpi infer` run: each resolution's meta from the checkpoint."""
    from lrmpi.jobs.checkpoint.reader import Checkpoint
    if os.path.exists(out):
        subprocess.run(["rm", "-rf", out, out + ".d"], check=True)
    cmd = [*launcher(a, a.ranks), sys.executable, "-m", "lrmpi", "infer", model, data,
           "-o", out, "--planes", str(a.planes), "--rule", "certified"]
    if a.deadline:
        cmd += ["--deadline", f"{a.deadline:g}s", "--margin", "1", "--deadline-ok"]
    t = time.perf_counter()
    checked(cmd)
    wall = time.perf_counter() - t
    ck = Checkpoint(out)
    metas = [ck.resolution(i)[0] for i in ck.resolution_indices()]
    data_last = ck.resolution(ck.resolution_indices()[-1])[1]
    n = len(data_last["predicted"])
    return {"wall_s": wall, "predicted": np.asarray(data_last["predicted"]),
            "certified_mask": np.asarray(data_last["certified"]).astype(bool),
            "metas": [{"index": int(mt["index"]), "elapsed_s": float(mt["elapsed_s"]),
                       "durable_s": float(mt.get("durable_s", mt["elapsed_s"])),
                       "certified": float(mt["certified_count"]) / n,
                       "refined": int(mt["refined_count"]), "bound_rel": float(mt["bound_rel"]),
                       "work": float(mt["work"]), "work_all": float(mt["work_all"])}
                      for mt in metas]}


def _medians(runs):
    out = []
    for i, first in enumerate(runs[0]["metas"][:min(len(r["metas"]) for r in runs)]):
        row = dict(first)
        for key in ("elapsed_s", "durable_s"):
            row[key] = statistics.median(r["metas"][i][key] for r in runs)
        out.append(row)
    return out


def _agreement(path, X, ref32, run):
    from lrmpi.nn import ops
    from lrmpi.nn.onnx_import import load_model
    g = load_model(path)
    # in batches: the float64 forward of 8192 VGG samples at once took 22 GB
    pred64 = np.concatenate([ops.decisions(g, ops.forward(g, X[i:i + 256].astype(np.float64)))
                             for i in range(0, len(X), 256)])
    pred32 = ops.decisions(g, np.asarray(ref32, np.float64))
    cert = run["certified_mask"]
    return {"agree_ort_f32": float(np.mean(run["predicted"] == pred32)),
            "certified_n": int(cert.sum()),
            "certified_agree_f64": float(np.mean(run["predicted"][cert] == pred64[cert]))
            if cert.any() else 1.0}


def _plot(png, rows):
    if not rows:
        return
    plt, fig, (ax1, ax2) = panels(2, 5.5)
    for row in rows:
        res = row["resolutions"]
        r = [x["index"] for x in res]
        ax1.plot(r, [x["certified"] for x in res], "o-", label=row["model"])
        ax2.plot(r, [x["durable_s"] / row["ort_f32_s"] for x in res], "o-", label=row["model"])
    ax1.set(xlabel="resolution", ylabel="decisions certified (fraction)", ylim=(0, 1.02))
    ax2.axhline(1.0, color="k", lw=0.8, ls="--")
    ax2.set(xlabel="resolution", ylabel="durable time / onnxruntime float32", yscale="log")
    ax1.legend(), ax2.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
