"""Area 8: messages — one-line errors, exit codes, no tracebacks, printed once under MPI."""
import os
import subprocess

import h5py
import numpy as np
import pytest

from adversary import (PY, assert_ok, assert_one_error, error_lines, mlp_onnx, run, save)


def test_no_command_and_unknown_command(tmp_path):
    r = run(cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert_one_error(run("matmull", "A.npy", cwd=tmp_path), code=2, contains=("matmull",))


def test_typo_option_printed_once_under_mpi(tmp_path, ops):
    """`--planse 4` (typo) at -n 3: exit 2, one error line in all (rank 0 only)."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "--planse", "4", n=3)
    assert_one_error(r, code=2)


def test_missing_operand_named(tmp_path, ops):
    a, _, _, _ = ops
    for n in (None, 3):
        r = run("matmul", a, tmp_path / "nope.npy", "-o", tmp_path / "C.h5", n=n)
        assert_one_error(r, code=1, contains=("nope.npy",))


def test_debug_shows_traceback(tmp_path, ops):
    """--debug is the way to the traceback: the same error with it."""
    a, _, _, _ = ops
    r = run("matmul", a, tmp_path / "nope.npy", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_inspect_and_pack_on_non_checkpoints(tmp_path, ops):
    """inspect/pack of an .npy, a foreign HDF5 file, a missing file: one line, exit 1."""
    a, _, _, _ = ops
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
        f.attrs["format_version"] = 1
    for p in (a, foreign, tmp_path / "missing.h5"):
        assert_one_error(run("inspect", p), code=1)
        assert_one_error(run("pack", p, tmp_path / "P.h5"), code=1)
        assert not (tmp_path / "P.h5").exists()


def test_non_utf8_path(tmp_path, ops):
    """An operand path that is not UTF-8 (bytes 0xff): one line, no UnicodeError."""
    _, b, A, _ = ops
    bad = os.path.join(os.fsencode(tmp_path), b"A\xff.npy")
    with open(bad, "wb") as f:
        np.save(f, A)
    r = subprocess.run([os.fsencode(PY), b"-m", b"lrmpi", b"matmul", bad, os.fsencode(b),
                        b"-o", os.path.join(os.fsencode(tmp_path), b"C\xfe.h5"), b"--planes", b"1"],
                       capture_output=True, timeout=60)
    err = r.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert r.returncode in (0, 1, 2), err   # done, or refused (bad input / bad option)
    if r.returncode != 0:
        assert len(error_lines(err)) == 1, err
    assert not [x for x in os.listdir(tmp_path) if x.startswith("C")], os.listdir(tmp_path)


def test_version_and_info():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() and "Traceback" not in r.stderr
    r = run("info")
    assert r.returncode == 0 and "Traceback" not in r.stderr


def test_overflow_product_no_warning(tmp_path):
    """A product beyond float64 (1e200 · 1e200): inf with an infinite bound, no numpy
    RuntimeWarning on stderr, exit 0; under -n 2 too."""
    A = np.full((3, 3), 1e200)
    a = save(tmp_path / "A.npy", A)
    for n in (None, 2):
        out = tmp_path / f"C{n}.h5"
        r = run("matmul", a, a, "-o", out, "--planes", "2", n=n)
        assert_ok(r)
        assert "RuntimeWarning" not in r.stderr and "overflow" not in r.stderr.lower()


def test_load_result_of_infer_checkpoint(tmp_path, rng):
    """lrmpi.load_result on an infer checkpoint: its scores, or an LrmpiError that says it
    is an inference checkpoint — never a KeyError."""
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    d = save(tmp_path / "d.npy", rng.standard_normal((4, 16)).astype(np.float32))
    out = tmp_path / "s.h5"
    assert_ok(run("infer", model, d, "-o", out, "--planes", "1"))
    code = ("import sys, lrmpi\n"
            "try:\n"
            "    lrmpi.load_result(sys.argv[1])\n"
            "except lrmpi.LrmpiError as e:\n"
            "    print('LrmpiError:', e); sys.exit(0)\n")
    r = subprocess.run([PY, "-c", code, str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


def test_load_result_missing_and_text_file(tmp_path):
    """load_result of a missing path or a text file raises LrmpiError (one message)."""
    txt = tmp_path / "t.h5"
    txt.write_text("hello")
    code = ("import sys, lrmpi\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n"
            "        lrmpi.load_result(p)\n"
            "    except lrmpi.LrmpiError as e:\n"
            "        print('ok', e)\n"
            "    else:\n"
            "        sys.exit('no error for ' + p)\n")
    r = subprocess.run([PY, "-c", code, str(tmp_path / "missing.h5"), str(txt)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.count("ok") == 2, r.stdout + r.stderr


@pytest.mark.parametrize("args", [["--resume", "--overwrite"], ["--cutoff", "3", "--no-cutoff"],
                                  ["--order", "diagonal"], ["--scale", "col"], ["--bits", "0"],
                                  ["--max-restarts", "-1"], ["--keep", "none"],
                                  ["--margin", "-1"], ["--deadline", ""], ["-o", ""],
                                  ["--final", "crt", "--moduli", "4", "--target", "fp32"]])
def test_bad_options_one_line_exit_2_at_three_ranks(tmp_path, ops, args):
    a, b, _, _ = ops
    r = run("matmul", a, b, *(["-o", str(tmp_path / "C.h5")] if "-o" not in args else []), *args,
            n=3)
    assert_one_error(r, code=2)


def _closed(fds, *args):
    """Runs lrmpi with the given standard fds closed (as cron or `>&-` leave them)."""
    return subprocess.run([PY, "-m", "lrmpi", *map(str, args)], timeout=60,
                          stdin=subprocess.DEVNULL, capture_output=1 not in fds and 2 not in fds,
                          preexec_fn=lambda: [os.close(fd) for fd in fds])


def test_closed_stdout_job_completes_exit_0(tmp_path, ops):
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    err = tmp_path / "err.txt"
    with open(err, "w") as e:
        r = subprocess.run([PY, "-m", "lrmpi", "matmul", a, b, "-o", str(out), "--planes", "1"],
                           stdin=subprocess.DEVNULL, stderr=e, timeout=60,
                           preexec_fn=lambda: os.close(1))
    from adversary import attrs_of
    assert attrs_of(out)["status"] == "complete"
    assert r.returncode == 0 and "Traceback" not in err.read_text(), err.read_text()


def test_closed_stdout_and_stderr(tmp_path, ops):
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    r = _closed((1, 2), "matmul", a, b, "-o", out, "--planes", "1")
    from adversary import attrs_of
    assert attrs_of(out)["status"] == "complete" and r.returncode == 0
    r = _closed((1, 2), "matmul", a, tmp_path / "nope.npy")
    assert r.returncode == 1


def test_inspect_while_running_says_running(tmp_path, ops):
    """inspect of a checkpoint being written: exit 0, status running, no error line."""
    import signal
    from adversary import kill_group, start, wait_for
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    p = start("matmul", a, b, "-o", out, "--planes", "3", n=2,
              env={"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "2.0",
                   "LRMPI_ROOT_COMPUTES": "no"})
    try:
        wait_for(out, 1, p, timeout=90)
        r = run("inspect", out)
        assert r.returncode == 0 and not error_lines(r.stderr), r.stderr
        assert "running" in r.stdout
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 130, err
        assert "on disk" in err
    finally:
        kill_group(p)


def test_resume_of_a_packed_stopped_job(tmp_path, ops):
    """A stopped job packed into one file, then `--resume -o ONE.h5`: continues to the
    uninterrupted result, or one line that does not call the intact pack damaged."""
    from adversary import load, stop_after
    a, b, _, _ = ops
    ref = tmp_path / "ref.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "3"))
    out = tmp_path / "C.h5"
    stop_after(out, 2, "matmul", a, b, "-o", out, "--planes", "3", slow="1.0")
    one = tmp_path / "ONE.h5"
    assert_ok(run("pack", out, one))
    r = run("matmul", a, b, "-o", one, "--planes", "3", "--resume")
    if r.returncode == 0:
        assert np.array_equal(load(one)[0], load(ref)[0])
    else:
        line = assert_one_error(r, code=1)
        assert "unreadable" not in line and "damaged" not in line, line
        assert not [x for x in os.listdir(str(one) + ".d") if x != ".lock"]
