"""The command line: commands, exit codes, one-line errors."""
import subprocess
import sys

import pytest

from lrmpi.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "lrmpi", *args], capture_output=True,
                          text=True, timeout=120)


def test_info_names_versions_and_kernel(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "kernel isa" in out and "numpy" in out and "h5py" in out


def test_demo_prints_one_line_per_resolution(capsys):
    assert main(["demo", "--n", "48", "--planes", "3", "--no-cutoff"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [ln for ln in lines if ln.split() and ln.split()[0].isdigit()]
    assert [int(ln.split()[0]) for ln in table] == [1, 2, 3, 4, 5]
    # the bound column is never below the error column
    for ln in table:
        *_, bound_rel, err = ln.split()
        assert float(bound_rel) >= float(err)


def test_demo_under_python_dash_m():
    p = run("demo", "--n", "32", "--planes", "2")
    assert p.returncode == 0, p.stderr
    assert "lrmpi demo: C = A B" in p.stdout and "err_rel" in p.stdout


@pytest.mark.parametrize("args, code, msg", [
    (["demo", "--planes", "0"], 2, "lrmpi: error: planes must be in 1..16, got 0"),
    (["demo", "--order", "spiral"], 2, "lrmpi: error: order must be one of"),
    (["demo", "--n", "0"], 2, "lrmpi: error: --n must be >= 1"),
    (["demo", "--infer", "--fin=crt"], 2, "lrmpi: error: --final is an option of the matmul"),
    (["demo", "--infer", "--n", "1024"], 2, "lrmpi: error: --n is an option of the matmul"),
    (["demo", "--no-adaptive"], 2, "lrmpi: error: --no-adaptive goes with --infer"),
    (["nosuchcommand"], 2, "invalid choice"),
])
def test_errors_are_one_line_and_non_zero(args, code, msg):
    p = run(*args)
    assert p.returncode == code
    assert msg in p.stderr
    assert "Traceback" not in p.stderr


def test_demo_infer_takes_debug_and_an_abbreviated_planes(monkeypatch):
    """--debug is every command's, not the matmul demo's; --plan 3 is --planes 3."""
    from lrmpi.experiments import demo as bodies
    seen = []
    monkeypatch.setattr(bodies, "infer", lambda binary, planes, *a: seen.append(planes))
    assert main(["demo", "--infer", "--debug", "--plan", "3"]) == 0
    assert main(["demo", "--infer"]) == 0
    assert seen == [3, 4]
