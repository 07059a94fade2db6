"""`lrmpi bench infer`: layered inference beside one-shot passes."""
import argparse
import json
import os

import numpy as np

from lrmpi.experiments.bench import bench, median_time


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
            t_one = median_time(lambda: M.forward(mdl, X32), a.repeats)
            one = M.forward(mdl, X32)
            acc_one = float(np.mean(((one[:, 0] > 0.5) if one.shape[1] == 1
                                     else one.argmax(1)) == y))
            print(f"{name}: {len(X)} test samples; one-shot float32 accuracy {acc_one:.4f}, "
                  f"{t_one * 1e3:.2f} ms")
            for adaptive in (False, True):
                def run():
                    return list(LayeredInference(mdl, X, planes=a.planes, adaptive=adaptive))
                res = run()
                t_first = median_time(lambda: next(iter(LayeredInference(
                    mdl, X, planes=a.planes, adaptive=adaptive))), a.repeats)
                t_all = median_time(run, a.repeats)
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



