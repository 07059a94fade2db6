"""lrmpi across simulated hosts: Linux network namespaces lrh1..lrhN joined by a
bridge, links shaped by tc (.ci/netcluster.sh), MPICH over TCP between them
(UCX_TLS=tcp: UCX would otherwise use shared memory, the hosts being one machine),
Hydra launching through `ip netns exec` (.ci/nsexec). Every process has its own
hostname, so MPICH and lrmpi see N hosts. Run by .ci/run with LRMPI_NETCLUSTER=N
after `bash .ci/netcluster.sh up N`; skipped otherwise."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from lrmpi import LayeredMatmul
from lrmpi.jobs.checkpoint import Checkpoint

HOSTS = int(os.environ.get("LRMPI_NETCLUSTER", "0"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CI = os.path.join(ROOT, ".ci")
pytestmark = pytest.mark.skipif(HOSTS < 2, reason="no simulated cluster (LRMPI_NETCLUSTER)")


def cluster_cmd(*args, hosts=HOSTS):
    from lrmpi.experiments.bench.scale import cluster_command
    return cluster_command(f"{CI}/nsexec", hosts, sys.executable, "-m", "lrmpi", *args)


def rx_bytes(host):
    out = subprocess.run(["ip", "netns", "exec", host, "cat",
                          "/sys/class/net/eth0/statistics/rx_bytes"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.fixture
def operands(tmp_path):
    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((768, 512)), rng.standard_normal((512, 384))
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "b.npy", B)
    return A, B, tmp_path / "a.npy", tmp_path / "b.npy"


def test_a_matmul_across_the_hosts_is_identical_to_one_host(operands, tmp_path):
    A, B, a, b = operands
    out = tmp_path / "c.h5"
    before = rx_bytes("lrh2")
    p = subprocess.run(cluster_cmd("matmul", a, b, "-o", out, "--planes", 3),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert rx_bytes("lrh2") - before > B.size  # the planes did cross the link
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "complete" and ck.attrs["ranks"] == HOSTS
    for r in LayeredMatmul(A, B, planes=3):
        np.testing.assert_array_equal(ck.resolution(r.index)[1]["C"], r.C)


def test_results_written_by_the_hosts_identical_and_c_never_reaches_the_root(operands,
                                                                            tmp_path):
    """--write ranks: each host writes its tiles (the shared file system is this
    machine's); the root's link carries plane blocks out and headers in, not C."""
    A, B, a, b = operands
    out = tmp_path / "c.h5"
    p = subprocess.run(cluster_cmd("matmul", a, b, "-o", out, "--planes", 3,
                                   "--write", "ranks"),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "complete" and ck.attrs["write"] == "ranks"
    for r in LayeredMatmul(A, B, planes=3):
        attrs, data = ck.resolution(r.index)
        np.testing.assert_array_equal(data["C"], r.C)
        assert attrs["root_bytes_recv"] < 64 * 1024  # C alone would be 2.4 MB


def test_a_killed_host_ends_the_job_and_keeps_what_was_finished(operands, tmp_path):
    A, B, a, b = operands
    out = tmp_path / "c.h5"
    proc = subprocess.Popen(cluster_cmd("matmul", a, b, "-o", out, "--planes", 6,
                                        "--order", "pairwise"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LRMPI_TEST_SLOW_RANK": "1",
                                 "LRMPI_TEST_SLOW_S": "0.2"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until a resolution is on disk
            if os.path.exists(out) and Checkpoint(out).attrs.get("completed", 0) >= 1:
                break
            time.sleep(0.2)
        victim = f"lrh{HOSTS}"
        pids = subprocess.run(["ip", "netns", "pids", victim], capture_output=True,
                              text=True).stdout.split()
        assert pids, f"nothing runs on {victim}"
        t = time.time()
        subprocess.run(["kill", "-9", *pids], check=False)
        _, err = proc.communicate(timeout=90)
        assert time.time() - t < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, err
    ck = Checkpoint(out)
    assert ck.attrs["completed"] >= 1
    ref = list(LayeredMatmul(A, B, planes=6, order="pairwise"))
    for i in ck.resolution_indices():
        np.testing.assert_array_equal(ck.resolution(i)[1]["C"], ref[i - 1].C)


def test_a_slow_link_is_a_straggler_and_changes_nothing(operands, tmp_path):
    A, B, a, b = operands
    out = tmp_path / "c.h5"
    slow = f"lrh{HOSTS}"
    subprocess.run(["bash", f"{CI}/netcluster.sh", "slow", str(HOSTS), "20mbit"], check=True)
    try:
        p = subprocess.run(cluster_cmd("matmul", a, b, "-o", out, "--planes", 3),
                           capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["bash", f"{CI}/netcluster.sh", "slow", str(HOSTS), "1gbit"],
                       check=True)
    assert p.returncode == 0, p.stderr
    ck = Checkpoint(out)
    for r in LayeredMatmul(A, B, planes=3):
        np.testing.assert_array_equal(ck.resolution(r.index)[1]["C"], r.C)
    print(f"with {slow} at 20 Mbit/s: resolutions durable at "
          f"{[round(ck.resolution_summary(i)['durable_s'], 2) for i in ck.resolution_indices()]} s")


def test_bench_scale_runs_on_the_simulated_hosts(tmp_path):
    import json
    out = tmp_path / "s.json"
    p = subprocess.run([sys.executable, "-m", "lrmpi", "bench", "scale", "--n", "256",
                        "--workers", "2", "--rates", "1gbit", "--planes", "2",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    row = json.loads(out.read_text())["results"][0]
    assert row["workers"] == 2 and row["oneshot_s"] > 0 and row["res1_s"] > 0
    # B's first plane once, and A's rows of the tiles the root did not compute itself
    # (alone on its host, it computes too)
    assert 256 * 256 <= row["resolutions"][0]["root_bytes_sent"] <= 2 * 256 * 256
