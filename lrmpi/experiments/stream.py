"""The paper's deadline experiment on real runs: a stream of matmul jobs.

    mpiexec -n 3 python -m lrmpi.experiments.stream --n 1024 --jobs 40 --json out.json

Jobs arrive as a Poisson process and are served one after another by this one
MPI job; a job that arrives while another is being served waits (real
queueing). Every service mode sees the same arrival times and matrices:

  oneshot@D   lrmpi.experiments.baseline.oneshot (float64 row-block scatter + GEMM + gather);
              it cannot stop half-way, so it runs to the end, and a job whose
              deadline (arrival + D) passed while it waited is dropped
  layered@D   lrmpi's layered matmul (Root/worker_run) with the job's deadline
              at arrival + D: it stops there with the resolutions it has (and
              drops jobs already late), then the next job starts
  yielding@D  layered@D that also stops refining once it has resolution 1 and
              the next job has arrived: refinement only uses idle time

D = inf gives the delays without deadlines. The arrival rate is `load` / the
one-shot service time measured first (so `load` is one-shot's utilisation).
Success of resolution r at deadline D = fraction of jobs whose resolution r
was ready within D of their arrival. Rank 0 prints one JSON document.

Heterogeneous workers: run it with LRMPI_TEST_SLOW_RANK / LRMPI_TEST_SLOW_FACTOR
(lrmpi.faults); the one-shot baseline's worker is slowed the same way.
"""
import argparse
import json
import logging
import math
import statistics
import sys
import time

import numpy as np

from lrmpi.experiments.baseline import oneshot
from lrmpi.jobs.deadline import Deadline
from lrmpi.jobs.job import Control
from lrmpi.log import logger
from lrmpi.numerics.layered import LayeredMatmul
from lrmpi.parallel import protocol
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.comm import get_comm, rank_size
from lrmpi.parallel.messages import StreamCommand
from lrmpi.parallel.root import Root
from lrmpi.parallel.worker import worker_run

CALIBRATE = 7  # service-time samples per mode before the streams


def _worker(comm):
    """Serve the root's stream: one job at a time until "done"."""
    backoff = Backoff(cap=2e-3)  # sleep between polls: the cores belong to the jobs
    while True:
        msg = protocol.recv_stream(comm, backoff)
        if msg == StreamCommand.DONE:
            return 0
        if msg == StreamCommand.ONESHOT:
            oneshot(comm, None, None)
        else:
            worker_run(comm)


class Server:
    """Rank 0: runs one job in a given mode with the workers."""

    def __init__(self, comm, planes):
        self.comm, self.planes = comm, planes
        self.workers = range(1, comm.Get_size())

    def _tell(self, mode):
        for w in self.workers:
            protocol.send_stream(self.comm, w, mode)

    def run(self, mode, A, B, arrival, deadline, next_arrival=math.inf):
        """Delays (s since `arrival`, epoch) of each result: [one-shot] or one per
        resolution reached; [] if the job was already late when it could start.
        `next_arrival` (epoch): when the next job arrives (mode "yielding")."""
        now, t = time.time(), time.perf_counter()
        if now >= arrival + deadline:
            return []
        lag = now - arrival
        self._tell(StreamCommand.ONESHOT if mode == "oneshot" else StreamCommand.LAYERED)
        if mode == "oneshot":
            oneshot(self.comm, A, B)
            return [lag + time.perf_counter() - t]
        at = None if math.isinf(deadline) else arrival + deadline
        lm = LayeredMatmul(A, B, planes=self.planes)
        holder = []
        # yielding: also stop once the root has resolution 1 and the next job waits
        yielding = (lambda: "next job" if holder[0].cur >= 1 and time.time() >= next_arrival
                    else None) if mode == "yielding" else None
        root = Root(lm, self.comm, control=Control(deadline=Deadline(at, margin=0.0),
                                                   stop_when=yielding), start=t)
        holder.append(root)
        root.run()
        return [lag + m["elapsed_s"] for m in root.meta]

    def done(self):
        self._tell(StreamCommand.DONE)


def stream(server, mode, jobs, arrivals, deadline):
    """Serve every job in arrival order; per job, the delays of its results."""
    t0 = time.time() + 0.02
    delays = []
    for j, (A, B) in enumerate(jobs):
        arrival = t0 + arrivals[j]
        wait = arrival - time.time()
        if wait > 0:
            time.sleep(wait)
        following = t0 + arrivals[j + 1] if j + 1 < len(jobs) else math.inf
        delays.append(server.run(mode, A, B, arrival, deadline, following))
    return delays


def success(delays, deadline, resolution):
    """Fraction of jobs whose result `resolution` (1-based) came within `deadline`."""
    ok = [len(d) >= resolution and d[resolution - 1] <= deadline for d in delays]
    return sum(ok) / len(ok)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lrmpi.experiments.stream", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1024, help="square matrix size")
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--load", type=float, default=0.5,
                   help="arrival rate x one-shot service time (default 0.5)")
    p.add_argument("--deadlines", default="0.25,0.5,0.75,1,1.5,2,3",
                   help="deadlines as multiples of the one-shot service time")
    p.add_argument("--planes", type=int, default=2, help="digit planes (the paper: 2)")
    p.add_argument("--pool", type=int, default=4, help="distinct matrix pairs, cycled")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    logger.setLevel(logging.ERROR)  # a line per resolution of every job is noise here
    comm = get_comm()
    rank, size = rank_size(comm)
    if rank != 0:
        return _worker(comm)
    server = Server(comm, a.planes)
    try:
        return _root(server, a, size)
    finally:
        server.done()


def _root(server, a, size):
    rng = np.random.default_rng(a.seed)
    pairs = [(rng.standard_normal((a.n, a.n)), rng.standard_normal((a.n, a.n)))
             for _ in range(a.pool)]
    jobs = [pairs[j % a.pool] for j in range(a.jobs)]
    # service times without queueing: one-shot, and each layered resolution; each
    # mode back to back, as in its streams (alternating the modes makes each one
    # fault in again the memory the other freed, which inflates both)
    service = {"oneshot": [], "layered": []}
    for mode in service:
        for i in range(CALIBRATE + 2):  # the first two warm up buffers and code paths
            A, B = pairs[i % a.pool]
            service[mode].append(server.run(mode, A, B, time.time(), math.inf))
    s_one = statistics.median(d[0] for d in service["oneshot"][2:])
    s_lay = [statistics.median(d[r] for d in service["layered"][2:])
             for r in range(len(service["layered"][0]))]
    rate = a.load / s_one
    arrivals = np.cumsum(rng.exponential(1.0 / rate, a.jobs)).tolist()
    factors = [float(x) for x in a.deadlines.split(",")]
    runs = {}
    for f in factors + [math.inf]:
        for mode in ("oneshot", "layered", "yielding"):
            runs[f"{mode}@{f:g}"] = stream(server, mode, jobs, arrivals, f * s_one)
    R = len(s_lay)
    table = []
    for f in factors:
        d = f * s_one
        table.append({"deadline_factor": f, "deadline_s": d,
                      "oneshot": success(runs[f"oneshot@{f:g}"], d, 1),
                      "layered": [success(runs[f"layered@{f:g}"], d, r) for r in range(1, R + 1)],
                      "yielding": [success(runs[f"yielding@{f:g}"], d, r)
                                   for r in range(1, R + 1)]})
    free = {"oneshot": [d[0] for d in runs["oneshot@inf"]],
            "layered": [[d[r] for d in runs["layered@inf"]] for r in range(R)]}
    doc = {"n": a.n, "ranks": size, "planes": a.planes, "jobs": a.jobs, "load": a.load,
           "rate_per_s": rate, "service_oneshot_s": s_one, "service_layered_s": s_lay,
           "mean_delay_oneshot_s": statistics.mean(free["oneshot"]),
           "mean_delay_layered_s": [statistics.mean(x) for x in free["layered"]],
           "mean_delay_yielding_r1_s": statistics.mean(d[0] for d in runs["yielding@inf"]),
           "success": table, "arrivals_s": arrivals, "delays": runs}
    json.dump(doc, sys.stdout, default=lambda x: None if x != x else x)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
