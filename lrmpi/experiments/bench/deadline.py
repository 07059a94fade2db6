"""`lrmpi bench deadline`: the paper's deadline experiment on real runs."""
import argparse
import json

from lrmpi.experiments.bench import add_launcher_option, bench, checked, launcher, panels, save, parsed


@bench
def deadline(argv):
    """The paper's deadline experiment, real: Poisson stream of matmul jobs under
    mpiexec, success rate vs deadline per resolution and for one-shot, with equal
    workers and with one worker F times slower (python -m lrmpi.experiments.stream)."""
    import sys
    p = argparse.ArgumentParser(prog="lrmpi bench deadline", description=deadline.__doc__)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--load", type=float, default=0.5)
    p.add_argument("--planes", type=int, default=2)
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--factor", type=float, default=3.0, help="slow worker: F times slower")
    p.add_argument("--deadlines", default="0.25,0.5,0.75,1,1.5,2,3")
    add_launcher_option(p)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG: success rate vs deadline")
    a = parsed(p, argv)
    cases = {"equal workers": {},
             f"rank 1 x{a.factor:g} slower": {"LRMPI_TEST_SLOW_RANK": "1",
                                               "LRMPI_TEST_SLOW_FACTOR": str(a.factor)}}
    results = {}
    for label, env in cases.items():
        out = checked(
            [*launcher(a, a.ranks), sys.executable, "-m", "lrmpi.experiments.stream",
             "--n", str(a.n), "--jobs", str(a.jobs), "--load", str(a.load),
             "--planes", str(a.planes), "--deadlines", a.deadlines], env=env)
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
    save(a, results, _plot_deadline, results)
    return 0





def _plot_deadline(png, results):
    plt, fig, axes = panels(len(results), 5.5)
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

