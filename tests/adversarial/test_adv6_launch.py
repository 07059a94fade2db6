"""Sixth adversarial pass, area 6: launch and settings — LRMPI_CACHE_DIR as a relative
path under mpiexec, as "" (none), as the output's name, as an input; `lrmpi bench` with odd
arguments. The README: every setting and option validated at start with one line; bad
options exit 2; `LRMPI_CACHE_DIR` is "a folder" ("" : none)."""
import json
import os

import pytest

from adversary import assert_ok, assert_one_error, bounded, digest, load, run
from adversary6 import assert_same, entries, infer


def test_relative_cache_dir_under_mpiexec(tmp_path, tiny):
    """LRMPI_CACHE_DIR=rel/cache under `mpiexec -n 2` from tmp_path: entries land in
    tmp_path/rel/cache, and a second run with them gives the same numbers."""
    m1, _, data, ref1 = tiny
    out = tmp_path / "s.h5"
    assert_ok(run("infer", m1, data, "-o", out, "--planes", "3", "--rule", "none", n=2,
                  cwd=tmp_path, env={"LRMPI_CACHE_DIR": "rel/cache"}))
    assert entries(tmp_path / "rel" / "cache", "graph")
    assert_same(out, ref1)
    assert_ok(run("infer", m1, data, "-o", out, "--planes", "3", "--rule", "none",
                  "--overwrite", n=2, cwd=tmp_path, env={"LRMPI_CACHE_DIR": "rel/cache"}))
    assert_same(out, ref1)


def test_empty_cache_dir_writes_no_cache_anywhere(tmp_path, tiny):
    """LRMPI_CACHE_DIR="" with HOME in tmp_path: no `.cache` appears under HOME and nothing
    but the checkpoint beside the output."""
    m1, _, data, ref1 = tiny
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "w"
    work.mkdir()
    r = run("infer", m1, data, "-o", work / "s.h5", "--planes", "3", "--rule", "none",
            env={"LRMPI_CACHE_DIR": "", "HOME": str(home)}, cwd=work)
    assert_ok(r)
    assert os.listdir(home) == []
    assert sorted(os.listdir(work)) == ["s.h5", "s.h5.d"]


def test_cache_dir_named_like_the_output(tmp_path, tiny):
    """LRMPI_CACHE_DIR = the (not yet existing) output file: one line, or a complete
    checkpoint at -o that loads."""
    m1, _, data, _ = tiny
    out = tmp_path / "s.h5"
    r = infer(m1, data, out, cache=out)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    assert_ok(r)
    assert os.path.isfile(out)
    load(out)


def test_cache_dir_is_the_model_file(tmp_path, tiny):
    """LRMPI_CACHE_DIR naming the model itself: the model stays byte for byte; the job
    completes with the model's numbers or says one line."""
    m1, _, data, ref1 = tiny
    before = digest(m1)
    out = tmp_path / "s.h5"
    r = infer(m1, data, out, cache=m1)
    assert digest(m1) == before
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    assert_same(out, ref1)


def _tb(*args):
    return list(args)


_late = _tb  # (both refused in one line now: the sixth adversarial pass's FOUND)


@pytest.mark.parametrize("args", [
    _tb("kernels", "--sizes", "0"), _tb("kernels", "--sizes", "abc"),
    _tb("kernels", "--sizes", "-64"), _tb("kernels", "--sizes", ""),
    _tb("kernels", "--sizes", "64", "--repeats", "0"),
    _tb("kernels", "--sizes", "64", "--isas", "foo"),
    _tb("matmul", "--shapes", "0"), _tb("matmul", "--shapes", "64", "--repeats", "0"),
    _tb("straggler", "--n", "-1"),
    _late("matmul", "--shapes", "64", "--repeats", "1", "--ranks", "0"),
    _late("matmul", "--shapes", "64", "--repeats", "1", "--planes", "99"),
    _late("straggler", "--n", "64", "--repeats", "1", "--factor", "0"),
    _late("deadline", "--n", "64", "--jobs", "0"),
    _late("deadline", "--n", "64", "--jobs", "2", "--load", "-1"),
    ["infer", "--models", "nope"], ["bounds", "--models", "nope"],
])
def test_bench_odd_arguments_one_line(tmp_path, args):
    """`lrmpi bench` with an argument outside what it can run (small sizes otherwise): one
    `lrmpi ...: error:` line, exit 2 (README: errors print one line, bad options exit 2),
    promptly, no traceback."""
    r = bounded("bench", *args, cwd=tmp_path, limit=60)
    _one_bench_error(r, code=2)


def _one_bench_error(r, code=None, codes=None):
    """One `lrmpi: error:` or `lrmpi bench NAME: error:` line, no traceback, the code."""
    import re
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert code is None or r.returncode == code, (r.returncode, out)
    assert codes is None or r.returncode in codes, (r.returncode, out)
    lines = [x for x in r.stderr.splitlines() if re.match(r"^lrmpi( bench)?( [a-z]+)?: error: ", x)]
    assert len(lines) == 1, out


def test_bench_matmul_dir_is_a_regular_file(tmp_path):
    """`lrmpi bench matmul --dir FILE`: one line, the file left as it was."""
    f = tmp_path / "notadir"
    f.write_text("mine")
    r = bounded("bench", "matmul", "--shapes", "64", "--repeats", "1", "--dir", f,
                cwd=tmp_path, limit=120)
    assert f.read_text() == "mine"
    _one_bench_error(r, codes=(1, 2))


def test_bench_kernels_tiny_writes_its_json(tmp_path):
    """`lrmpi bench kernels --sizes 64 --repeats 1 --isas ref --json k.json`: exit 0 and a
    JSON file that parses."""
    r = bounded("bench", "kernels", "--sizes", "64", "--repeats", "1", "--isas", "ref",
                "--json", tmp_path / "k.json", cwd=tmp_path, limit=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(tmp_path / "k.json") as f:
        json.load(f)
