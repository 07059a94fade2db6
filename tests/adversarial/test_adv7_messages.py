"""Seventh adversarial pass, area 8: messages — `inspect` and `load_result` on every kind of
file lrmpi writes (resolution, resume data, rank, state files, cache entries, the lock, a
packed file), `bench` and `demo` arguments out of range, options of the other demo silently
dropped, the Ctrl-C line. The README: errors print one line (`lrmpi: error: ...`), exit 1
(bad input) or 2 (bad option, setting or usage), no traceback; options that contradict
each other are refused, never one of them silently dropped; the Ctrl-C log line says
whether a resolution of these inputs is on disk."""
import glob
import os
import re
import signal

import numpy as np
import pytest

from adversary import (SLOW, assert_ok, assert_one_error, kill_group, load_in_child,
                       mlp_onnx, run, save, start, wait_for)
from adversary6 import entries, infer


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    """{kind: path} of files lrmpi writes: a root-written and a ranks-written matmul
    (complete), an infer (state file), its cache entries, the lock; made once."""
    tmp_path = tmp_path_factory.mktemp("adv7kinds")
    rng = np.random.default_rng(7)
    a = save(tmp_path / "A.npy", rng.standard_normal((40, 24)))
    b = save(tmp_path / "B.npy", rng.standard_normal((24, 16)))
    c = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", c, "--planes", "2"))
    rk = str(tmp_path / "R.h5")
    assert_ok(run("matmul", a, b, "-o", rk, "--planes", "2", "--write", "ranks", n=2))
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    d = save(tmp_path / "d.npy", rng.standard_normal((4, 16)).astype(np.float32))
    s = tmp_path / "S.h5"
    cache = tmp_path / "cache"
    assert_ok(infer(m, d, s, cache=cache))
    one = lambda pat: sorted(glob.glob(pat))[0]   # noqa: E731
    return {
        "resolution": one(c + ".d/*/res002.h5"),
        "sums": one(c + ".d/*/sums002.h5"),
        "rank": one(rk + ".d/*/rank0001-res001.h5"),
        "state": one(str(s) + ".d/*/state*.h5"),
        "graph": entries(cache, "graph")[0],
        "norms": entries(cache, "norms3")[0],
        "lock": c + ".d/.lock",
        "model": str(m),
    }


KINDS = ["resolution", "sums", "rank", "state", "graph", "norms", "lock", "model"]


@pytest.mark.parametrize("kind", KINDS)
def test_inspect_of_a_file_that_is_not_a_job_file(every_kind, kind):
    """`lrmpi inspect` on a file lrmpi wrote that is not a job file (or a model): one line
    naming the file, exit 1, no traceback."""
    p = every_kind[kind]
    r = run("inspect", p)
    line = assert_one_error(r, code=1)
    assert os.path.basename(p) in line, line


@pytest.mark.parametrize("kind", ["resolution", "rank", "graph", "lock"])
def test_load_result_and_pack_of_a_file_that_is_not_a_job_file(tmp_path, every_kind, kind):
    """`load_result` raises lrmpi's own one-line error (not another exception) and `pack`
    writes nothing, one line, exit 1."""
    p = every_kind[kind]
    rc, C, err = load_in_child(p)
    assert rc == 1 and C is None and "Traceback" not in err, err
    target = tmp_path / f"packed-{kind}.h5"
    assert_one_error(run("pack", p, target), code=1)
    assert not os.path.exists(target)


@pytest.mark.parametrize("args", [
    ("bench", "matmul", "--shapes", "8x8", "--ranks", "1"),
    ("bench", "matmul", "--shapes", "8", "--ranks", "0"),
    ("bench", "kernels", "--isas", "foo", "--sizes", "64"),
    ("bench", "infer", "--models", "foo", "--no-accuracy"),
    ("bench", "straggler", "--factor", "0"),
    ("demo", "--n", "-5"),
])
def test_bench_and_demo_arguments_out_of_range(tmp_path, args):
    """Bench and demo arguments out of range: one error line (argparse's usage may come
    before it), exit 2, no traceback, nothing written in the working folder."""
    r = run(*args, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errs = [l for l in r.stderr.splitlines() if re.match(r"^lrmpi( [a-z]+)*: error: ", l)]
    assert len(errs) == 1, r.stderr
    assert os.listdir(tmp_path) == []


FOUND_DEMO = ("FOUND: `lrmpi demo` silently drops the options of the other demo: `--infer` "
              "with `--final crt`/`--moduli`/`--cutoff`/`--order`/`--n`, and `--binary` / "
              "`--no-adaptive` without `--infer`, run exit 0")


@pytest.mark.parametrize("args", [
    ("--binary", "--n", "16", "--planes", "1"),
    ("--no-adaptive", "--n", "16", "--planes", "1"),
])
def test_demo_options_of_the_other_demo_refused(tmp_path, args):
    """Options that belong to the other demo (matmul's with `--infer`, inference's
    without it) are refused with one line, exit 2, never silently dropped."""
    r = run("demo", *args, cwd=tmp_path, timeout=60, env={"LRMPI_CACHE_DIR": ""})
    assert_one_error(r, code=2)


def test_ctrl_c_line_says_a_resolution_is_on_disk(tmp_path, ops):
    """SIGINT to the group of a two-rank job with a slow worker once resolution 1 is
    listed: exit 130, no traceback, and the last log line about the disk says a
    resolution is on disk (not "nothing")."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    p = start("matmul", a, b, "-o", out, "--planes", "4", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.3"})
    try:
        wait_for(out, 1, p)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        kill_group(p)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert "on disk" in err.lower(), err
    assert "nothing" not in [l for l in err.lower().splitlines() if "on disk" in l][-1], err
