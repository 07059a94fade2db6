"""Eighth adversarial pass, area 8: messages — `lrmpi inspect` (and `--status`, `pack`,
`load_result`) on every kind of file lrmpi writes or reads that is not a job file: the cache's
graph .npy and .npz, a norms entry, resume data, a rank file, an `inspect --plot` image, a
stats JSON, the lock, an ONNX model; a packed file inspected whole; `bench kernels` with a bad
ISA or a JSON path in a missing folder. The README: errors print one line (`lrmpi: error:
...`), exit 1 (bad input) or 2 (bad option); no traceback."""
import glob
import os

import pytest

from adversary import (assert_ok, assert_one_error, job_folder, load_in_child, run,
                       save)
from adversary8 import gmodels, graph_npy, warm  # noqa: F401


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, gmodels):
    """{kind: path} of files lrmpi writes besides job files, plus a packed checkpoint."""
    import numpy as np
    m1, _, data, seed, _ = gmodels
    d = tmp_path_factory.mktemp("adv8zoo")
    rng = np.random.default_rng(8)
    a = save(d / "A.npy", rng.standard_normal((40, 24)))
    b = save(d / "B.npy", rng.standard_normal((24, 16)))
    out = d / "C.h5"
    stats = d / "stats.json"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--write", "ranks", n=2,
                  env={"LRMPI_STATS_FILE": str(stats)}))
    plot = d / "plot.png"
    assert_ok(run("inspect", out, "--plot", plot))
    packed = d / "ONE.h5"
    assert_ok(run("pack", out, packed))
    cache = warm(seed, d / "cache")
    jf = job_folder(out)
    root = d / "R.h5"
    assert_ok(run("matmul", a, b, "-o", root, "--planes", "2"))
    return {
        "graph_npy": graph_npy(cache),
        "graph_npz": graph_npy(cache)[:-4] + ".npz",
        "norms": glob.glob(str(cache / "norms3-*"))[0],
        "sums": glob.glob(os.path.join(job_folder(root), "sums*.h5"))[0],
        "rank_file": glob.glob(os.path.join(jf, "rank*-res*.h5"))[0],
        "plot": str(plot), "stats": str(stats),
        "lock": str(d / "C.h5.d" / ".lock"), "model": m1, "packed": str(packed),
    }


KINDS = ["graph_npy", "graph_npz", "norms", "sums", "rank_file", "plot", "stats", "lock",
         "model"]


@pytest.mark.parametrize("kind", KINDS)
def test_inspect_of_a_file_that_is_not_a_job_file(zoo, kind):
    """`inspect` of each: one line, exit 1, no traceback."""
    assert_one_error(run("inspect", zoo[kind]), code=1)


@pytest.mark.parametrize("kind", ["graph_npz", "rank_file"])
def test_status_pack_and_load_result_of_non_job_files(zoo, kind, tmp_path):
    """`inspect --status`, `pack` and `load_result` of a cache entry / a rank file: one
    line each (load_result: LrmpiError), nothing written by pack."""
    p = zoo[kind]
    assert_one_error(run("inspect", "--status", p), code=1)
    target = tmp_path / "P.h5"
    assert_one_error(run("pack", p, target), code=1)
    assert not target.exists()
    code, _, err = load_in_child(p)
    assert code == 1 and "ERR" in err and "Traceback" not in err, err


def test_packed_file_inspects_clean(zoo):
    """A packed ranks-written checkpoint: `inspect` exits 0 with every resolution checked,
    `--status` says complete."""
    r = run("inspect", zoo["packed"])
    assert_ok(r)
    assert "verified" in r.stdout
    s = run("inspect", "--status", zoo["packed"])
    assert s.returncode == 0 and s.stdout.strip() == "complete", s.stdout + s.stderr


def test_bench_kernels_unknown_isa_one_line(tmp_path):
    """`bench kernels --isas foo`: one line, exit 2, no JSON written."""
    j = tmp_path / "k.json"
    assert_one_error(run("bench", "kernels", "--sizes", "64", "--isas", "foo", "--json", j),
                     code=2)
    assert not j.exists()


def test_bench_kernels_json_into_a_missing_folder_one_line(tmp_path):
    """`bench kernels --json missing/k.json`: one line (exit 1 or 2), no traceback."""
    assert_one_error(run("bench", "kernels", "--sizes", "64", "--isas", "ref", "--repeats",
                         "1", "--json", tmp_path / "missing" / "k.json"), codes=(1, 2))
