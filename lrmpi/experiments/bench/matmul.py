"""`lrmpi bench matmul`: the time until each resolution is durable, from launch.

Per shape, in turns (numpy, MPI one-shot, lrmpi, repeated; medians):
  numpy process    `python -m lrmpi.experiments.baseline --numpy`: load A and B,
                   multiply with numpy's threads, save C with fsync; launch to exit.
  MPI one-shot     `mpiexec -n R python -m lrmpi.experiments.baseline --out`: scatter,
                   float64 GEMM per rank, gather, save with fsync; launch to exit.
  lrmpi            `mpiexec -n R lrmpi matmul A B -o C.h5`: for each resolution, when
                   it was computed and when it was durable (fsynced and linked),
                   from launch (the job records its start; the bench its launch).
Also per resolution: the true error against numpy's product, the writer's lag
(durable - computed) beside the time its bytes take at the disk's measured fsync
speed, and the pipeline efficiency: the workers' kernel thread-CPU seconds /
(workers x the span from the resolution's first WORK to its last RESULT). And per
rank (the job's stats file, LRMPI_STATS_FILE): wall and thread-CPU seconds per stage
(read, encode, send, receive, kernel, decode, accumulate, bound, write...), the CPU
of the checkpoint writer and other threads, peak memory (VmHWM), and when the job
started, encoded B and sent its first task, from the launch.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

from lrmpi.experiments.bench import (add_launcher_option, bench, checked, describe, launcher,
                                     machine, panels, save, shape_of, parsed)


def disk_speed(folder, mb=256):
    """MB/s of a sequential write with fsync in `folder` (like dd conv=fsync)."""
    path = os.path.join(folder, "disk.bin")
    block = np.ones(1 << 20, np.uint8).tobytes()
    t = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    speed = mb / (time.perf_counter() - t)
    os.unlink(path)
    return speed


def _timed(cmd, env=None):
    """(launch epoch, seconds from launch to exit, stdout) of a command that must succeed."""
    t = time.time()
    p = checked(cmd, env)
    return t, time.time() - t, p.stdout


def _lrmpi_run(a, fa, fb, c, ref, refmax, hi=None):
    """One lrmpi job: per resolution its figures, times from launch and true error;
    per rank its stages."""
    from lrmpi.jobs.checkpoint import Checkpoint
    # a fresh output each time: replacing a result would keep the earlier one listed
    # until the new one is as good, and durable would mean "listed" only at the end
    for old in (c, c + ".d"):
        shutil.rmtree(old) if os.path.isdir(old) else os.path.exists(old) and os.unlink(old)
    cmd = [*launcher(a, a.ranks), sys.executable, "-m", "lrmpi", "matmul", fa, fb,
           "-o", c, "--planes", str(a.planes), "--keep", a.keep]
    if a.final:
        cmd += ["--final", a.final] + (["--moduli", str(a.moduli)] if a.moduli else [])
    if a.write != "root":
        cmd += ["--write", a.write]
    stats = c + ".stats.json"
    launch, wall, _ = _timed(cmd + ([] if a.fsync else ["--no-fsync"]),
                             env={"LRMPI_STATS_FILE": stats})
    with open(stats) as f:
        ranks = _rank_stages(json.load(f)["ranks"], launch)
    os.unlink(stats)
    ck = Checkpoint(c)
    offset = float(ck.attrs["started_at"]) - launch
    rows = []
    for i in range(1, ck.completed + 1):
        m = ck.resolution_summary(i)
        row = {k: float(v) for k, v in m.items() if isinstance(v, (int, float))}
        row["computed_from_launch_s"] = offset + row["elapsed_s"]
        row["durable_from_launch_s"] = offset + row["durable_s"]
        if i in ck.resolution_indices():
            C = ck.resolution(i)[1]["C"]
            row["err"] = float(np.abs(C - ref).max() / refmax)
            if hi is not None:  # against the extended-precision rows
                idx, R = hi
                row["err_hi"] = float(np.abs(C[idx] - R).max() / np.abs(R).max())
        row["method"] = m.get("method", "planes")
        rows.append(row)
    return {"wall_s": wall, "start_offset_s": offset, "resolutions": rows, "ranks": ranks}


# stages in the order a job goes through them (others follow, by name)
STAGE_ORDER = ("read", "encode", "send", "receive", "wait for work", "receive planes",
               "wait for broadcasts", "kernel", "accumulate", "accumulate and decode",
               "decode", "bound", "fallback check", "accumulate, decode, write", "idle")


def _rank_stages(ranks, launch):
    """{rank: {stage: (wall s, cpu s)}, plus "write" (the checkpoint writer thread's
    CPU), "other" (process CPU outside the stages), peak and final RSS (MB) and the
    marks from launch} from a stats file's ranks."""
    out = {}
    for r, rep in ranks.items():
        st = {k: (v[1], v[2]) for k, v in rep["stages"].items()}
        threads = rep.get("threads_cpu_s", {})
        if "lrmpi-checkpoint" in threads:
            st["write (writer thread)"] = (float("nan"), threads["lrmpi-checkpoint"])
        st["other"] = (float("nan"), rep["process_cpu_s"] - sum(c for _, c in st.values()))
        out[r] = {"stages": st, "peak_rss_mb": rep.get("peak_rss_mb", float("nan")),
                  "cpu_s": rep["process_cpu_s"],
                  "marks": {k: v - launch for k, v in rep.get("marks", {}).items() if v}}
    return out


@bench
def matmul(argv):
    """Durable time of each resolution from launch, beside one-shot numpy and MPI jobs."""
    p = argparse.ArgumentParser(prog="lrmpi bench matmul", description=matmul.__doc__)
    p.add_argument("--shapes", default="4096,8192", help="n or MxKxN, comma-separated")
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--planes", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--keep", default="all", choices=("all", "latest"))
    p.add_argument("--no-fsync", dest="fsync", action="store_false")
    p.add_argument("--write", default="root", choices=("root", "ranks"),
                   help="who writes C (lrmpi matmul --write)")
    p.add_argument("--final", default=None, choices=("crt",),
                   help="add the CRT resolution (its error is also measured against "
                        "extended precision on sampled rows, beside numpy's own)")
    p.add_argument("--moduli", type=int, default=None)
    p.add_argument("--phi", type=float, default=None,
                   help="operands (rand - 0.5) exp(phi randn) as in GEMMul8's tests "
                        "(default: standard normal)")
    p.add_argument("--dir", default=None, help="folder for the inputs and outputs "
                   "(default: a temporary one; the disk being measured)")
    add_launcher_option(p)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG: error against durable time")
    a = parsed(p, argv)
    m = machine()
    print(describe(m))
    rng = np.random.default_rng(0)
    results = []
    if a.dir:  # e.g. a folder on the disk to measure, named for the first time
        os.makedirs(a.dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        mbps = disk_speed(tmp)
        print(f"disk: {mbps:.0f} MB/s sequential with fsync ({tmp})")
        for spec in a.shapes.split(","):
            mm, kk, nn = shape_of(spec)
            fa, fb = os.path.join(tmp, "A.npy"), os.path.join(tmp, "B.npy")
            gen = (rng.standard_normal if a.phi is None else
                   (lambda shape: (rng.random(shape) - 0.5) * np.exp(a.phi * rng.standard_normal(shape))))
            np.save(fa, gen((mm, kk)))
            np.save(fb, gen((kk, nn)))
            ref = np.load(fa) @ np.load(fb)
            refmax = float(np.abs(ref).max())
            hi, numpy_err = None, None
            if a.final:  # 64 rows in extended precision (x87 long double: 64-bit mantissa)
                idx = np.sort(rng.choice(mm, min(mm, 64), replace=False))
                R = np.load(fa)[idx].astype(np.longdouble) @ np.load(fb).astype(np.longdouble)
                hi = (idx, R)
                numpy_err = float(np.abs(ref[idx] - R).max() / np.abs(R).max())
            runs = {"numpy": [], "mpi": [], "lrmpi": []}
            for _ in range(a.repeats):
                _, took, out = _timed([sys.executable, "-m", "lrmpi.experiments.baseline",
                                       "--numpy", fa, fb, os.path.join(tmp, "Cn.npy")])
                runs["numpy"].append(took)
                _, took, out = _timed([*launcher(a, a.ranks), sys.executable, "-m",
                                       "lrmpi.experiments.baseline", fa, fb, "--out",
                                       os.path.join(tmp, "Cm.npy")])
                runs["mpi"].append(took)
                runs["lrmpi"].append(_lrmpi_run(a, fa, fb, os.path.join(tmp, "C.h5"), ref,
                                                refmax, hi))
            row = _summarize(mm, kk, nn, a, runs, mbps)
            row["numpy_err_hi"], row["phi"] = numpy_err, a.phi
            results.append(row)
            _print(row)
    save(a, {"machine": m, "disk_mb_s": mbps, "results": results}, _plot, results)
    return 0


def _summarize(m, k, n, a, runs, mbps):
    med = statistics.median
    nres = min(len(r["resolutions"]) for r in runs["lrmpi"])
    res = []
    for i in range(nres):
        rows = [r["resolutions"][i] for r in runs["lrmpi"]]
        keys = set.intersection(*(set(r) for r in rows)) - {"method"}
        out = {key: med(r[key] for r in rows) for key in keys}
        out["method"] = rows[0]["method"]
        out["lag_s"] = med(r["durable_s"] - r["elapsed_s"] for r in rows)
        written = 8.0 * m * n + (4.0 * m * n if i > 0 or a.keep != "all" else 0.0)
        out["write_s_at_disk_speed"] = written / 1e6 / mbps
        # --keep latest: a replaced resolution's summary has no span (nan)
        eff = [r["kernel_s"] / (r["workers"] * r["span_s"]) for r in rows if r.get("span_s")]
        out["efficiency"] = med(eff) if eff else float("nan")
        res.append(out)
    return {"shape": [m, k, n], "ranks": a.ranks, "planes": a.planes, "fsync": a.fsync,
            "disk_mb_s": mbps, "write": a.write, "A_B_C_mb": 8e-6 * (m * k + k * n + m * n),
            "per_rank": _median_ranks([r["ranks"] for r in runs["lrmpi"]]),
            "numpy_process_s": med(runs["numpy"]), "mpi_oneshot_s": med(runs["mpi"]),
            "lrmpi_wall_s": med(r["wall_s"] for r in runs["lrmpi"]),
            "start_offset_s": med(r["start_offset_s"] for r in runs["lrmpi"]),
            "resolutions": res, "runs": runs}


def _median_ranks(runs):
    """Medians over the runs of each rank's stages, memory, CPU and marks."""
    med = statistics.median
    out = {}
    for r in runs[0]:
        reps = [run[r] for run in runs if r in run]
        names = list(dict.fromkeys(k for rep in reps for k in rep["stages"]))
        out[r] = {"stages": {k: tuple(med(rep["stages"].get(k, (0.0, 0.0))[i] for rep in reps)
                                      for i in (0, 1)) for k in names},
                  "peak_rss_mb": med(rep["peak_rss_mb"] for rep in reps),
                  "cpu_s": med(rep["cpu_s"] for rep in reps),
                  "marks": {k: med(rep["marks"][k] for rep in reps if k in rep["marks"])
                            for k in reps[0]["marks"]}}
    return out


def _print_ranks(row):
    """Where the time goes, per rank: wall / thread-CPU seconds per stage (medians)."""
    ranks = row["per_rank"]
    names = sorted({k for r in ranks.values() for k in r["stages"]},
                   key=lambda k: (STAGE_ORDER.index(k) if k in STAGE_ORDER else 99, k))
    cols = sorted(ranks, key=int)
    print(f"\nper stage, wall / thread-CPU seconds (rank 0 = root; fsync "
          f"{'on' if row['fsync'] else 'off'}, disk {row['disk_mb_s']:.0f} MB/s, C written "
          f"by {row['write']}):")
    print(f"{'stage':>26} " + " ".join(f"{'rank ' + r:>15}" for r in cols))
    for k in names:
        cells = []
        for r in cols:
            w, c = ranks[r]["stages"].get(k, (float("nan"), float("nan")))
            cells.append(f"{'-' if w != w else f'{w:.3f}':>7}/{'-' if c != c else f'{c:.3f}':<7}")
        print(f"{k:>26} " + " ".join(cells))
    print(f"{'process CPU s':>26} " + " ".join(f"{ranks[r]['cpu_s']:>15.2f}" for r in cols))
    print(f"{'peak RSS MB (VmHWM)':>26} " + " ".join(f"{ranks[r]['peak_rss_mb']:>15.0f}"
                                                     for r in cols))
    print(f"{'':>26} A + B + C in float64: {row['A_B_C_mb']:.0f} MB")
    root = ranks.get("0", {}).get("marks", {})
    if root:
        print("root, from launch: " + ", ".join(f"{k} {v:.3f} s" for k, v in
                                                sorted(root.items(), key=lambda x: x[1])))


def _cell(r, key, width):
    """An integer figure of a resolution, or '-' where its summary has none."""
    return f"{int(r[key]):>{width}}" if key in r else f"{'-':>{width}}"


def _print(row):
    m, k, n = row["shape"]
    base = row["numpy_process_s"]
    print(f"\n{m}x{k} @ {k}x{n}, {row['ranks']} ranks, {row['planes']} planes: numpy process "
          f"(load, multiply, save+fsync) {base:.2f} s; MPI one-shot (+ save) "
          f"{row['mpi_oneshot_s']:.2f} s; lrmpi whole job {row['lrmpi_wall_s']:.2f} s "
          f"(job starts {row['start_offset_s']:.2f} s after launch)")
    if row.get("numpy_err_hi") is not None:
        print(f"numpy's own error against extended precision (64 sampled rows): "
              f"{row['numpy_err_hi']:.2e}; err_hi below is lrmpi's on the same rows")
    print(f"{'res':>4} {'method':>6} {'prod':>4} {'pairs':>5} {'computed':>9} {'durable':>9} "
          f"{'x numpy':>8} {'lag':>6} {'write@disk':>10} {'effic.':>6} {'err_rel':>9} "
          f"{'bound_rel':>9} {'err_hi':>9}")
    for i, r in enumerate(row["resolutions"], 1):
        # --keep latest: a replaced resolution's summary lists times and bounds alone
        print(f"{i:>4} {r['method']:>6} {_cell(r, 'products', 4)} "
              f"{_cell(r, 'pairs', 5)} {r['computed_from_launch_s']:>9.2f} "
              f"{r['durable_from_launch_s']:>9.2f} {r['durable_from_launch_s'] / base:>8.2f} "
              f"{r['lag_s']:>6.2f} {r['write_s_at_disk_speed']:>10.2f} "
              f"{r.get('efficiency', float('nan')):>6.2f} {r.get('err', float('nan')):>9.2e} "
              f"{r.get('bound_rel', float('nan')):>9.2e} {r.get('err_hi', float('nan')):>9.2e}")
    _print_ranks(row)


def _plot(png, results):
    plt, fig, axes = panels(len(results), 5)
    for ax, row in zip(axes, results):
        rs = row["resolutions"]
        ax.semilogy([r["durable_from_launch_s"] for r in rs],
                    [max(r.get("err", r.get("bound_rel", 1e-17)), 1e-17) for r in rs], "o-",
                    label="lrmpi, durable (true error)")
        ax.semilogy([r["durable_from_launch_s"] for r in rs],
                    [r.get("bound_rel", float("nan")) for r in rs],
                    "s--", label="lrmpi bound")
        ax.axvline(row["numpy_process_s"], color="k", label="numpy process (load, x, save)")
        ax.axvline(row["mpi_oneshot_s"], color="r", label="MPI one-shot float64 (+ save)")
        m, k, n = row["shape"]
        ax.set_title(f"{m}x{k} @ {k}x{n}, {row['ranks']} ranks")
        ax.set_xlabel("seconds from launch")
        ax.set_ylabel("relative error")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
