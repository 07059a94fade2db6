"""`lrmpi bench infer`: layered inference beside onnxruntime float32 and int8.

(a) accuracy: the digits models (trained with scikit-learn), accuracy and
    certified fraction per resolution for each rule, in one process;
(b) speed: generated models (random weights, random inputs), every peer FROM
    LAUNCH, as a user runs it: `mpiexec -n RANKS lrmpi infer MODEL X.npy -o OUT.h5`
    (each resolution durable: the job records its start, the bench its launch),
    and a process that imports onnxruntime, creates the session (float32, or the
    `quantize_dynamic` int8 model), reads X.npy, runs and writes the decisions
    with fsync; beside `session.run` alone (warm), with 2 intra-op threads (the
    cores); runs interleaved, medians of --repeats. Per resolution: the rule and
    the certified fraction, and lrmpi's CPU seconds per stage summed over the
    ranks (quantize, products, decode, ops, bound, comm; lrmpi/stages.py), the
    start-up (launch to job start, prepare, broadcast) and the write (durable -
    computed). Decisions at the last resolution compared with onnxruntime
    float32, and the certified ones with the float64 model.
(c) --file MODEL.onnx: the same row for a model of the user's (a zoo graph with
    a symbolic batch axis, e.g. a ResNet-50), --file-samples random samples.
"""
import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from lrmpi.experiments.bench import (add_launcher_option, bench, checked, describe, launcher,
                                     machine, need, panels, save, parsed)

SPEED = {  # name: (builder, samples) -- the sizes
    "mlp": ("mlp", 32768),
    "vgg": ("vgg_small", 8192),
    "resnet18": ("resnet18", 2048),
    "resnet_deep": ("resnet_deep", 2048),   # 21 conv layers: the bounds' deep net (#28)
}


@bench
def infer(argv):
    """Layered inference: accuracy per resolution (digits) and time to each durable
    resolution beside onnxruntime float32 / int8 (generated models)."""
    p = argparse.ArgumentParser(prog="lrmpi bench infer", description=infer.__doc__)
    p.add_argument("--planes", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="onnxruntime's intra-op threads (default: the cores)")
    p.add_argument("--models", default="mlp,vgg,resnet18",
                   help=f"speed models, comma-separated, of {', '.join(SPEED)}; '' for none")
    p.add_argument("--samples", type=float, default=1.0,
                   help="fraction of each speed model's sample count (quick runs)")
    p.add_argument("--file", action="append", default=[], metavar="MODEL.onnx",
                   help="also this ONNX model of your own (one float input with a symbolic "
                        "batch axis; random normal samples; its first output); repeatable")
    p.add_argument("--file-samples", type=int, default=64, metavar="N",
                   help="samples for each --file model (default 64)")
    p.add_argument("--no-accuracy", action="store_true", help="skip the digits table")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds: run each lrmpi job under --deadline (a user's time limit; "
                        "the table shows the resolutions that were durable by then)")
    p.add_argument("--no-tightness", action="store_true",
                   help="skip the --rule none run that measures the bounds' tightness")
    add_launcher_option(p)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    a = parsed(p, argv)
    models = [name for name in a.models.split(",") if name]
    for name in models:
        if name not in SPEED:
            p.error(f"unknown model {name!r}; choose from {', '.join(SPEED)}")
    if models or a.file:  # every missing piece named now, in one line, before any work
        need("onnxruntime", "bench", "lrmpi bench infer")
        need("onnx", "infer", "lrmpi bench infer")
        launcher(a, a.ranks)
    files = {path: file_shape(p, path, a.file_samples) for path in a.file}
    if not a.no_accuracy:
        for module in ("onnx", "sklearn"):
            need(module, "infer", "lrmpi bench infer (the digits accuracy table)")
    from lrmpi.experiments.bench.matmul import disk_speed
    m = machine()
    mbps = disk_speed(tempfile.gettempdir())
    print(describe(m) + f"; load average {os.getloadavg()[0]:.2f}; disk {mbps:.0f} MB/s "
          "sequential with fsync")
    doc = {"machine": m, "planes": a.planes, "ranks": a.ranks, "disk_mb_s": mbps,
           "load_average": os.getloadavg()[0], "accuracy": [], "speed": []}
    if not a.no_accuracy:
        doc["accuracy"] = accuracy_table(a.planes)
    for name in models:
        doc["speed"].append(speed_row(name, a))
    for path, shape in files.items():
        doc["speed"].append(speed_row(path, a, shape))
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


ORT_PROCESS = """
import sys, os, numpy as np, onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = int(sys.argv[3]), 1
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
y = s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[2])})[0]
d = (y[:, 0] > 0.5) if y.shape[1] == 1 else y.argmax(axis=1)
with open(sys.argv[4], "wb") as f:
    np.save(f, d)
    f.flush()
    os.fsync(f.fileno())
"""
STAGES = ("quantize", "products", "decode", "ops", "bound", "comm")


def file_shape(p, path, count):
    """The per-sample input shape of a --file model (usage error if it has none)."""
    import onnx
    try:
        dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type \
            .shape.dim
    except Exception as exc:  # noqa: BLE001 -- unreadable: one line
        p.error(f"--file {path}: {exc}")
    if not dims or any(d.dim_value <= 0 for d in dims[1:]) or \
            dims[0].dim_value not in (0, count):
        p.error(f"--file {path}: needs an input of a fixed per-sample shape and a symbolic "
                f"batch axis; has {[d.dim_param or d.dim_value for d in dims]}")
    return [d.dim_value for d in dims[1:]]


def speed_row(name, a, shape=None):
    """One model's row: `name` of SPEED (generated), or a --file path of input `shape`."""
    from lrmpi.experiments import models
    with tempfile.TemporaryDirectory() as tmp:
        if shape is None:
            builder, count = SPEED[name]
            count = max(1, int(count * a.samples))
            proto = getattr(models, builder)()
            path = models.save(proto, os.path.join(tmp, "m.onnx"))
            shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
        else:
            path, count, name = name, a.file_samples, os.path.basename(name)
        X = np.random.default_rng(1).standard_normal((count, *shape)).astype(np.float32)
        data = os.path.join(tmp, "x.npy")
        np.save(data, X)
        q8 = quantized(path, tmp)
        f32, ref32 = ort_time(path, X, a.threads, a.repeats)
        i8 = ort_time(q8, X, a.threads, a.repeats)[0] if q8 else math.nan
        launch32, launch8, runs = [], [], []
        for _ in range(a.repeats):  # interleaved: peer, lrmpi, peer, lrmpi
            launch32.append(ort_launch(path, data, a.threads, tmp))
            launch8.append(ort_launch(q8, data, a.threads, tmp) if q8 else math.nan)
            runs.append(lrmpi_run(path, data, os.path.join(tmp, "o.h5"), a))
        row = {"model": name, "samples": count, "ranks": a.ranks, "threads": a.threads,
               "ort_f32_s": f32, "ort_int8_s": i8,
               "ort_f32_launch_s": statistics.median(launch32),
               "ort_int8_launch_s": statistics.median(launch8),
               "rule": "certified", "resolutions": _medians(runs),
               "start_offset_s": statistics.median(r["offset"] for r in runs),
               "prepare_s": statistics.median(r["prepare_s"] for r in runs),
               "bcast_s": statistics.median(r["bcast_s"] for r in runs)}
        row.update(_agreement(path, X, ref32, runs[-1]))
        if not a.no_tightness:  # every sample at every resolution: bounds.tightness
            from lrmpi.experiments.bench import bounds
            out = os.path.join(tmp, "none.h5")
            lrmpi_run(path, data, out, a, rule="none")
            for r, t in zip(row["resolutions"], bounds.tightness(path, X, out)):
                r.update(tightness=t["tightness"], tightness_p90=t["tightness_p90"])
        _print_row(row)
        return row


def _print_row(row):
    best = min(x for x in (row["ort_int8_launch_s"], row["ort_f32_launch_s"])
               if not math.isnan(x))  # int8: nan where onnxruntime could not quantize
    f32 = row["ort_f32_launch_s"]
    print(f"{row['model']}: {row['samples']} samples, mpiexec -n {row['ranks']}; onnxruntime "
          f"({row['threads']} threads) from launch: float32 {f32:.3f} s, int8 "
          f"{row['ort_int8_launch_s']:.3f} s (session.run alone: {row['ort_f32_s']:.3f} / "
          f"{row['ort_int8_s']:.3f} s)")
    print(f"  lrmpi, rule {row['rule']}: job starts {row['start_offset_s']:.2f} s after launch, "
          f"prepare {row['prepare_s']:.2f} s, model+data to the ranks {row['bcast_s']:.2f} s")
    print("  res  from launch  /best ORT  /ORT f32  certified  refined   write   CPU s: "
          + " ".join(f"{k:>8}" for k in STAGES))
    for r in row["resolutions"]:
        print(f"  {r['index']:>3} {r['durable_from_launch_s']:>11.2f} "
              f"{r['durable_from_launch_s'] / best:>10.2f} {r['durable_from_launch_s'] / f32:>9.2f} "
              f"{r['certified']:>10.4f} {r['refined']:>8d} {r['write_s']:>7.3f}          "
              + " ".join(f"{r['cpu'][k]:>8.3f}" for k in STAGES)
              + (f"  tightness {r['tightness']:.3g}" if "tightness" in r else ""))
    print(f"  last durable resolution: decisions = ort float32 on {row['agree_ort_f32']:.4%}, "
          f"certified = float64 model on {row['certified_agree_f64']:.4%} "
          f"of {row['certified_n']}")


def ort_time(path, X, threads, repeats):
    """session.run alone (warm: after one run), median of `repeats`; and its output."""
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


def ort_launch(model, data, threads, tmp):
    """Seconds from launch to exit of a process that imports onnxruntime, creates the
    session, reads the data, runs and writes the decisions with fsync."""
    t = time.perf_counter()
    checked([sys.executable, "-c", ORT_PROCESS, model, data, str(threads),
             os.path.join(tmp, "decisions.npy")])
    return time.perf_counter() - t


def quantized(path, tmp):
    """onnxruntime's dynamic int8 model of `path`, or None (said in one line) where its
    quantizer fails on the model (e.g. a zoo graph its opset converter rejects)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    out = os.path.join(tmp, "m8.onnx")
    try:
        quantize_dynamic(path, out, weight_type=QuantType.QInt8)
    except Exception as exc:  # noqa: BLE001 - the peer's tool, not lrmpi: reported, skipped
        print(f"onnxruntime int8: not available for {os.path.basename(path)} "
              f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})")
        return None
    return out


def lrmpi_run(model, data, out, a, rule="certified"):
    """One `mpiexec -n RANKS lrmpi infer` run: each resolution's meta from the
    checkpoint, its times from launch (the job records its start, we the launch)."""
    from lrmpi.jobs.checkpoint.reader import Checkpoint
    if os.path.exists(out):
        subprocess.run(["rm", "-rf", out, out + ".d"], check=True)
    cmd = [*launcher(a, a.ranks), sys.executable, "-m", "lrmpi", "infer", model, data,
           "-o", out, "--planes", str(a.planes), "--rule", rule]
    if a.deadline:
        cmd += ["--deadline", f"{a.deadline:g}s", "--margin", "1", "--deadline-ok"]
    launch = time.time()
    checked(cmd)
    ck = Checkpoint(out)
    offset = float(ck.attrs["started_at"]) - launch
    metas = [ck.resolution(i)[0] for i in ck.resolution_indices()]
    data_last = ck.resolution(ck.resolution_indices()[-1])[1]
    n = len(data_last["predicted"])
    return {"offset": offset, "predicted": np.asarray(data_last["predicted"]),
            "prepare_s": float(metas[0].get("prepare_s", 0.0)),
            "bcast_s": float(metas[0].get("bcast_s", 0.0)),
            "certified_mask": np.asarray(data_last["certified"]).astype(bool),
            "metas": [{"index": int(mt["index"]), "elapsed_s": float(mt["elapsed_s"]),
                       "durable_s": float(mt.get("durable_s", mt["elapsed_s"])),
                       "durable_from_launch_s": offset + float(mt.get("durable_s",
                                                                      mt["elapsed_s"])),
                       "write_s": float(mt.get("durable_s", mt["elapsed_s"]))
                       - float(mt["elapsed_s"]),
                       "cpu": {k: float(mt.get(f"cpu_{k}_s", 0.0)) for k in STAGES},
                       "certified": float(mt["certified_count"]) / n,
                       "refined": int(mt["refined_count"]), "bound_rel": float(mt["bound_rel"]),
                       "work": float(mt["work"]), "work_all": float(mt["work_all"])}
                      for mt in metas]}


def _medians(runs):
    out = []
    for i, first in enumerate(runs[0]["metas"][:min(len(r["metas"]) for r in runs)]):
        row = dict(first)
        for key in ("elapsed_s", "durable_s", "durable_from_launch_s", "write_s"):
            row[key] = statistics.median(r["metas"][i][key] for r in runs)
        row["cpu"] = {k: statistics.median(r["metas"][i]["cpu"][k] for r in runs)
                      for k in STAGES}
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
        ax2.plot(r, [x["durable_from_launch_s"] / row["ort_f32_launch_s"] for x in res], "o-",
                 label=row["model"])
    ax1.set(xlabel="resolution", ylabel="decisions certified (fraction)", ylim=(0, 1.02))
    ax2.axhline(1.0, color="k", lw=0.8, ls="--")
    ax2.set(xlabel="resolution", ylabel="durable from launch / onnxruntime float32 from launch",
            yscale="log")
    ax1.legend(), ax2.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
