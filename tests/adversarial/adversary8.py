"""Helpers of the eighth adversarial pass: a model whose imported graph is kept in the
cache folder as two files (parameters of 64 kB and more in a float64 .npy, mapped
read-only, and a keyed .npz), and waiting for a rank to have mapped that .npy (the
instant a change of the file during a job matters). Built on adversary.py (the real CLI)."""
import glob
import os
import shutil
import time

import numpy as np
import pytest

from adversary import assert_ok, mlp_onnx, rank_pid, run, save, start, wait_asleep
from adversary6 import cache_env

# Two hidden layers of 160: W of 96x160 and 160x160 float64 (123 kB, 205 kB) go to the .npy.
GSIZES = (96, 160, 160, 5)
GARGS = ("--planes", "3", "--rule", "none")


def ginfer(model, data, out, cache, *extra, n=None, env=None, args=GARGS, timeout=90):
    return run("infer", model, data, "-o", out, *args, *extra, n=n,
               env={**cache_env(cache), **(env or {})}, timeout=timeout)


def gstart(model, data, out, cache, *extra, n=3, env=None, marker="adv8", args=GARGS):
    return start("infer", model, data, "-o", out, *args, *extra, n=n,
                 env={**cache_env(cache), "ADV_MARK": marker, **(env or {})})


def graph_npy(cache):
    found = glob.glob(os.path.join(str(cache), "graph-*.npy"))
    assert len(found) == 1, os.listdir(str(cache))
    return found[0]


def wait_mapped(pid, path, proc, timeout=60):
    """Until process `pid` has `path` mapped (its /proc/PID/maps names it)."""
    limit = time.time() + timeout
    name = os.path.realpath(path)
    while time.time() < limit:
        if proc.poll() is not None:
            raise AssertionError("the job ended before mapping the graph")
        try:
            with open(f"/proc/{pid}/maps") as f:
                if name in f.read():
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"{path} never mapped by {pid}")


@pytest.fixture(scope="session")
def gmodels(tmp_path_factory):
    """Two models of one architecture with a graph .npy, data, a warm seed cache of the
    first and the first's no-cache reference: (m1, m2, data, seed, ref1)."""
    d = tmp_path_factory.mktemp("adv8g")
    rng = np.random.default_rng(88)
    m1 = mlp_onnx(d / "g1.onnx", rng, sizes=GSIZES)
    m2 = mlp_onnx(d / "g2.onnx", rng, sizes=GSIZES)
    data = save(d / "gd.npy", rng.standard_normal((7, GSIZES[0])).astype(np.float32))
    seed = d / "seed"
    assert_ok(ginfer(m1, data, d / "warm.h5", seed))
    graph_npy(seed)
    ref1 = d / "ref1.h5"
    assert_ok(ginfer(m1, data, ref1, ""))
    return m1, m2, data, seed, ref1


def warm(seed, dest):
    shutil.copytree(seed, dest)
    return dest


def root_mapped_then(p, npy, action, marker="adv8", rank=0):
    """Once rank 0 of job `p` maps the cached graph `npy` and sleeps in the (test-slowed)
    preparation, past the read and its digest, do `action()`; the job's result. With
    `rank` > 0, once that rank maps the file too."""
    try:
        pid = rank_pid(marker, 0)
        wait_mapped(pid, npy, p)
        wait_asleep(pid, steady=0.3)
        if rank:
            wait_mapped(rank_pid(marker, rank), npy, p)
        action()
        out, err = p.communicate(timeout=90)
        return p.returncode, out + err
    finally:
        from adversary import kill_group
        kill_group(p)
