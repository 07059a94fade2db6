"""`lrmpi bench bounds`: how tight the logit bounds are, how much they certify and
what they cost, per resolution, on generated models (random weights and inputs).

In one process, every sample at every resolution (as `--rule none`), for each
model: the tightness (per sample, the largest logit radius over the largest
|logit_r - logit_f64|, the float64 model being ops.forward), the certified
fraction (at that resolution, and by it as the certified rule freezes them), the
bound's CPU time against the resolution's forward pass without a bound (the
products), the share of samples bounded a second time, the plan, and every
violation (a radius below the measured deviation: there must be none). Also the
preparation of the norms (cold cache, then warm). `--check N` bounds N samples per
model and reports only the violations: the offline validation.

`tightness(model_path, X, out_h5)` does the same from a job's checkpoint (the
`lrmpi bench infer` column).
"""
import argparse
import os
import tempfile
import time

import numpy as np

from lrmpi.experiments.bench import bench, describe, machine, panels, save, parsed

MODELS = {"mlp": ("mlp", 4096), "vgg": ("vgg_small", 512), "resnet18": ("resnet18", 128),
          "resnet_deep": ("resnet_deep", 512)}


@bench
def bounds(argv):
    """Tightness, certified fraction and cost of the logit bounds per resolution."""
    p = argparse.ArgumentParser(prog="lrmpi bench bounds", description=bounds.__doc__)
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--samples", type=float, default=1.0,
                   help="fraction of each model's sample count")
    p.add_argument("--planes", type=int, default=4)
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="only count violations over N samples per model (offline validation)")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    a = parsed(p, argv)
    m = machine()
    print(describe(m))
    doc = {"machine": m, "planes": a.planes, "models": []}
    for name in filter(None, a.models.split(",")):
        if name not in MODELS:
            p.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        doc["models"].append(check(name, a.check, a.planes) if a.check else
                             measure(name, a.samples, a.planes))
    save(a, doc, _plot, doc["models"])
    return 0


def _model(name):
    from lrmpi.experiments import models
    from lrmpi.nn.onnx_import import load_model
    with tempfile.TemporaryDirectory() as tmp:
        path = models.save(getattr(models, MODELS[name][0])(), os.path.join(tmp, "m.onnx"))
        return load_model(path)


def _data(g, count, seed=1):
    return np.random.default_rng(seed).standard_normal(
        (count, *g.input_shape)).astype(np.float32).astype(np.float64)


def float64_logits(g, X, batch=64):
    from lrmpi.nn import ops
    return np.concatenate([ops.forward(g, X[i:i + batch]) for i in range(0, len(X), batch)])


def measure(name, fraction, planes):
    from lrmpi import config
    from lrmpi.nn import certify
    from lrmpi.nn.engine import PreparedModel
    from lrmpi.nn.quantized import forward_at
    g = _model(name)
    X = _data(g, max(1, int(MODELS[name][1] * fraction)))
    f64 = float64_logits(g, X)
    with tempfile.TemporaryDirectory() as cache, config.configure(cache_dir=cache):
        t = time.process_time()
        model = PreparedModel(g, 7, planes)
        prep = [time.process_time() - t]
        rows, done = [], np.zeros(len(X), bool)
        for r in range(1, planes + 1):
            t = time.process_time()
            model.prepare(r)
            prep_r = time.process_time() - t
            logits, radius = model.evaluate(X, r)
            t = time.thread_time()
            for i in range(0, len(X), 256):
                forward_at(g, model.weights, X[i:i + 256], r, 7)
            forward_s = time.thread_time() - t
            cost = model.norms.cost[r]
            plan, err, spent, _ = model.norms.plans[r]
            cert = certify.certified(logits, radius)
            done |= cert
            dev = np.abs(logits - f64)
            ratio = radius.max(axis=1) / np.maximum(dev.max(axis=1), 1e-300)
            rows.append({"index": r, "tightness": float(np.median(ratio)),
                         "tightness_p90": float(np.percentile(ratio, 90)),
                         "certified": float(cert.mean()), "certified_by": float(done.mean()),
                         "violations": int(np.sum(dev > radius)),
                         "bound_cost": (cost["bound_s"] + cost["retry_s"]) / forward_s,
                         "planned_cost": spent, "retried": cost["retried"] / len(X),
                         "forward_s": forward_s, "bound_s": cost["bound_s"],
                         "retry_s": cost["retry_s"], "prepare_s": prep_r,
                         "modes": sorted({str(v) for v in plan.values()}),
                         "predicted_error": err})
            print(f"{name} r{r}: tightness {rows[-1]['tightness']:.3g} (p90 "
                  f"{rows[-1]['tightness_p90']:.3g}), certified {cert.mean():.4f} (by r{r}: "
                  f"{done.mean():.4f}), bound {rows[-1]['bound_cost']:.2f}x the forward "
                  f"(planned {spent:.2f} of its products; {rows[-1]['retried']:.3f} retried), "
                  f"modes {','.join(rows[-1]['modes'])}, violations {rows[-1]['violations']}",
                  flush=True)
        t = time.process_time()
        PreparedModel(g, 7, planes).norms.prepare(2)   # warm: from the cache
        prep.append(time.process_time() - t)
    print(f"{name}: {len(X)} samples; norms prepared in {prep[0] + sum(r['prepare_s'] for r in rows):.2f} s "
          f"cold, {prep[1]:.2f} s warm")
    return {"model": name, "samples": len(X), "resolutions": rows,
            "prepare_cold_s": prep[0] + sum(r["prepare_s"] for r in rows),
            "prepare_warm_s": prep[1]}


def check(name, count, planes, chunk=2048):
    """Violations of the bound against the float64 model over `count` samples."""
    from lrmpi.nn.engine import PreparedModel
    g = _model(name)
    model = PreparedModel(g, 7, planes)
    bad, worst = 0, 0.0
    for s in range(0, count, chunk):
        X = _data(g, min(chunk, count - s), seed=1000 + s)
        f64 = float64_logits(g, X)
        for r in range(1, planes + 1):
            logits, radius = model.evaluate(X, r)
            dev = np.abs(logits - f64)
            bad += int(np.sum(dev > radius))
            worst = max(worst, float(np.max(dev / np.maximum(radius, 1e-300))))
    print(f"{name}: {count} samples x {planes} resolutions: {bad} violations; largest "
          f"deviation / radius {worst:.3g}")
    return {"model": name, "samples": count, "violations": bad, "worst_ratio": worst}


def tightness(model_path, X, out, planes_bits=7):
    """Per resolution of a `--rule none` job's checkpoint: the median and 90th
    percentile over samples of its bound over the measured deviation from the
    float64 model (the resolution's logits computed again here: they are
    bit-identical to the job's, whatever its ranks)."""
    from lrmpi.jobs.checkpoint.reader import Checkpoint
    from lrmpi.nn.onnx_import import load_model
    from lrmpi.nn.quantized import NodeWeights, forward_at
    g = load_model(model_path)
    X = np.asarray(X, np.float64).reshape((len(X),) + tuple(g.input_shape))
    f64 = float64_logits(g, X)
    ck = Checkpoint(out)
    planes = int(ck.attrs["planes"])
    weights = {n.output: NodeWeights(n, planes_bits, planes) for n in g.linear}
    rows = []
    for i in ck.resolution_indices():
        meta, data = ck.resolution(i)
        r = int(meta["index"])
        logits = np.concatenate([forward_at(g, weights, X[j:j + 256], r, planes_bits)
                                 for j in range(0, len(X), 256)])
        dev = np.abs(logits - f64).max(axis=1)
        ratio = np.asarray(data["bound"]) / np.maximum(dev, 1e-300)
        rows.append({"index": r, "tightness": float(np.median(ratio)),
                     "tightness_p90": float(np.percentile(ratio, 90)),
                     "violations": int(np.sum(ratio < 1))})
    return rows


def _plot(png, models):
    models = [m for m in models if "resolutions" in m]
    if not models:
        return
    plt, fig, (a1, a2, a3) = panels(3, 4.5)
    for m in models:
        res = m["resolutions"]
        r = [x["index"] for x in res]
        a1.plot(r, [x["certified_by"] for x in res], "o-", label=m["model"])
        a2.semilogy(r, [x["tightness"] for x in res], "o-", label=m["model"])
        a3.plot(r, [x["bound_cost"] for x in res], "o-", label=m["model"])
    a1.set(xlabel="resolution", ylabel="certified by this resolution", ylim=(0, 1.02))
    a2.set(xlabel="resolution", ylabel="tightness (bound / deviation, median)")
    a3.axhline(0.5, color="k", lw=0.8, ls="--")
    a3.set(xlabel="resolution", ylabel="bound CPU / forward CPU")
    for ax in (a1, a2, a3):
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
