"""`lrmpi bench scale`: lrmpi across simulated hosts, beside the one-shot MPI job.

Needs root and hosts as Linux network namespaces named lrh1..lrhN, each with an
`eth0` to a shared bridge (the repository's `.ci/netcluster.sh up N` makes
them). For each link rate (tc tbf on every host's eth0) and worker count W, the
root runs alone on lrh1 and the W workers on lrh2..lrh(W+1), MPICH over TCP
(UCX_TLS=tcp,self). Measured from launch: resolution 1 and the float32-level
resolution (the first with true error <= 1e-6) durable on disk, the one-shot
MPI float64 job (`python -m lrmpi.experiments.baseline --out`, scatter rows of A,
broadcast B, gather C, save with fsync), and the root's bytes per resolution.
On a 2-core machine the hosts share 2 cores: compute is oversubscribed, the
link and the bytes are what this measures.
"""
import argparse
import os
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np

from lrmpi.experiments.bench import bench, describe, machine, panels, save, parsed

LAUNCHER = """#!/bin/sh
# Hydra's ssh: `launcher -x HOST COMMAND...` runs COMMAND in HOST's namespaces
[ "$1" = "-x" ] && shift
host=$1; shift
exec ip netns exec "$host" unshare --uts sh -c "hostname $host; exec $*"
"""


def _shape(hosts, rate):
    for h in range(1, hosts + 1):
        subprocess.run(["ip", "netns", "exec", f"lrh{h}", "tc", "qdisc", "replace", "dev",
                        "eth0", "root", "tbf", "rate", rate, "burst", "256kbit", "latency",
                        "50ms"], check=True)


def cluster_command(launcher, hosts, *argv):
    """argv under mpiexec over hosts lrh1..lrhN, one rank each, launched from lrh1."""
    names = ",".join(f"lrh{i}" for i in range(1, hosts + 1))
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    inner = (f"hostname lrh1; exec {mpiexec} -genv UCX_TLS tcp,self -genv UCX_NET_DEVICES eth0 "
             f"-launcher ssh -launcher-exec {launcher} -hosts {names} -n {hosts} -ppn 1 "
             + " ".join(str(a) for a in argv))
    return ["ip", "netns", "exec", "lrh1", "unshare", "--uts", "sh", "-c", inner]


def _run(cmd):
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-6:])} failed: {p.stderr[-1500:]}")
    return t, time.time() - t


@bench
def scale(argv):
    """lrmpi across simulated hosts (network namespaces): durable times and root bytes
    for 2, 4, 8 workers at 1 and 10 Gbit/s, beside the one-shot MPI float64 job."""
    p = argparse.ArgumentParser(prog="lrmpi bench scale", description=scale.__doc__)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--workers", default="2,4,8")
    p.add_argument("--rates", default="1gbit,10gbit")
    p.add_argument("--planes", type=int, default=4)
    p.add_argument("--write", default="root", help="root, ranks, or root,ranks: both")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    a = parsed(p, argv)
    from lrmpi.jobs.checkpoint import Checkpoint
    workers = [int(w) for w in a.workers.split(",")]
    hosts_needed = max(workers) + 1
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    have = {line.split()[0] for line in listed.splitlines() if line.strip()}
    missing = [f"lrh{i}" for i in range(1, hosts_needed + 1) if f"lrh{i}" not in have]
    if missing:
        p.error(f"needs hosts lrh1..lrh{hosts_needed} (network namespaces; "
                f"`bash .ci/netcluster.sh up {hosts_needed}` in the repository)")
    m = machine()
    print(describe(m))
    rows = []
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        launcher = os.path.join(tmp, "nsexec")
        with open(launcher, "w") as f:
            f.write(LAUNCHER)
        os.chmod(launcher, stat.S_IRWXU)
        rng = np.random.default_rng(0)
        fa, fb = os.path.join(tmp, "A.npy"), os.path.join(tmp, "B.npy")
        np.save(fa, rng.standard_normal((a.n, a.n)))
        np.save(fb, rng.standard_normal((a.n, a.n)))
        ref = np.load(fa) @ np.load(fb)
        refmax = float(np.abs(ref).max())
        py = sys.executable
        for rate in a.rates.split(","):
            _shape(hosts_needed, rate)
            for w, write in [(w, x) for w in workers for x in a.write.split(",")]:
                hosts = w + 1
                _, one = _run(cluster_command(launcher, hosts, py, "-m",
                                              "lrmpi.experiments.baseline", fa, fb, "--out",
                                              os.path.join(tmp, "Cm.npy")))
                out = os.path.join(tmp, "C.h5")
                subprocess.run(["rm", "-rf", out, out + ".d"], check=True)
                launch, wall = _run(cluster_command(launcher, hosts, py, "-m", "lrmpi",
                                                    "matmul", fa, fb, "-o", out,
                                                    "--planes", a.planes, "--write", write))
                ck = Checkpoint(out)
                offset = float(ck.attrs["started_at"]) - launch
                res = []
                for i in ck.resolution_indices():
                    s = ck.resolution_summary(i)
                    err = float(np.abs(ck.resolution(i)[1]["C"] - ref).max() / refmax)
                    res.append({"index": i, "durable_s": offset + float(s["durable_s"]),
                                "err": err, "root_bytes_sent": int(s["root_bytes_sent"]),
                                "root_bytes_recv": int(s["root_bytes_recv"])})
                fp32 = next((r for r in res if r["err"] <= 1e-6), res[-1])
                row = {"rate": rate, "workers": w, "write": write, "n": a.n, "oneshot_s": one,
                       "lrmpi_wall_s": wall, "res1_s": res[0]["durable_s"],
                       "fp32_s": fp32["durable_s"], "fp32_index": fp32["index"],
                       "resolutions": res}
                rows.append(row)
                print(f"{rate:>7} {w} workers, {write} writes: one-shot {one:6.2f} s; lrmpi res 1 "
                      f"{row['res1_s']:6.2f} s ({row['res1_s'] / one:.2f}x), fp32-level "
                      f"(res {fp32['index']}) {row['fp32_s']:6.2f} s "
                      f"({row['fp32_s'] / one:.2f}x); root MB sent per resolution "
                      + " ".join(f"{r['root_bytes_sent'] / 1e6:.1f}" for r in res)
                      + "; received " + " ".join(f"{r['root_bytes_recv'] / 1e6:.1f}"
                                                 for r in res))
        _shape(hosts_needed, "10gbit")
    save(a, {"machine": m, "results": rows}, _plot, rows)
    return 0


def _plot(png, rows):
    plt, fig, (ax1, ax2) = panels(2, 5.5)
    for rate, write in sorted({(r["rate"], r.get("write", "root")) for r in rows}):
        sel = [r for r in rows if r["rate"] == rate and r.get("write", "root") == write]
        w = [r["workers"] for r in sel]
        tag = f"{rate}, {write} writes"
        ax1.plot(w, [r["res1_s"] / r["oneshot_s"] for r in sel], "o-", label=f"res 1, {tag}")
        ax1.plot(w, [r["fp32_s"] / r["oneshot_s"] for r in sel], "s--",
                 label=f"fp32-level, {tag}")
        ax2.plot(w, [sum(x["root_bytes_sent"] for x in r["resolutions"]) / 1e6 for r in sel],
                 "o-", label=f"sent, {tag}")
        ax2.plot(w, [sum(x["root_bytes_recv"] for x in r["resolutions"]) / 1e6 for r in sel],
                 "^:", label=f"received, {tag}")
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set(xlabel="workers", ylabel="durable time / one-shot MPI float64")
    ax2.set(xlabel="workers", ylabel="root MB (all resolutions)")
    ax1.legend(fontsize=6), ax2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
