"""The benchmark commands run (smoke tests on tiny sizes; benchmarks are not timed tests)."""
import json

import pytest

from launching import run


def test_bench_matmul_smoke(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.json"
    p = run("bench", "matmul", "--shapes", "96x40x64", "--ranks", 2, "--repeats", 1,
            "--planes", 3, "--json", out, "--plot", tmp_path / "m.png", timeout=300)
    assert p.returncode == 0, p.stderr
    row = json.loads(out.read_text())["results"][0]
    assert row["shape"] == [96, 40, 64] and len(row["resolutions"]) == 5
    for r in row["resolutions"]:
        assert r["err"] <= r["bound_rel"]
    assert row["resolutions"][0]["bytes_sent"] > 0
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_kernels_smoke(tmp_path):
    p = run("bench", "kernels", "--sizes", "64", "--repeats", 1, "--json", tmp_path / "k.json")
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "k.json").read_text())["rows"]
    assert any(r["what"].startswith("int8") for r in rows)
