"""Second adversarial pass, area 8: messages — one line on stderr that names the thing, the
right exit code, nothing on stdout for an error, no traceback, nothing half-written."""
import os
import signal
import time

import h5py
import numpy as np
import pytest

from adversary import (SLOW, assert_ok, assert_one_error, attrs_of, kill_group, run, save,
                      snapshot, start, stop_after)


@pytest.fixture
def done(tmp_path, ops):
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    return out, a, b


def test_matmul_without_arguments(tmp_path):
    """`lrmpi matmul` alone: exit 2, one line, nothing on stdout."""
    r = run("matmul", cwd=tmp_path)
    assert_one_error(r, code=2)
    assert r.stdout == ""


def test_extra_positional_refused(tmp_path, ops):
    """A third positional (`matmul A B C.npy`): exit 2 naming it, no output written."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "stray.npy", "-o", tmp_path / "C.h5", cwd=tmp_path)
    assert_one_error(r, code=2, contains=("stray.npy",))
    assert not (tmp_path / "C.h5").exists()


@pytest.mark.parametrize("opt,value", [("--planes", "0"), ("--planes", "17"), ("--bits", "8"),
                                       ("--cutoff", "-2"), ("--moduli", "0")])
def test_out_of_range_option_named(tmp_path, ops, opt, value):
    """An out-of-range value: exit 2, the one line names the option and the value, stdout
    empty."""
    a, b, _, _ = ops
    extra = ["--final", "crt"] if opt == "--moduli" else []
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", opt, value, *extra)
    assert_one_error(r, code=2, contains=(opt.lstrip("-"), value))
    assert r.stdout == ""


def test_missing_model_and_data_named(tmp_path, rng):
    """infer with a missing model, then a missing data file: exit 1, the line names the path."""
    from adversary import mlp_onnx
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    d = save(tmp_path / "d.npy", rng.standard_normal((3, 16)).astype(np.float32))
    r = run("infer", tmp_path / "nomodel.onnx", d, "-o", tmp_path / "s.h5")
    assert_one_error(r, code=1, contains=("nomodel.onnx",))
    r = run("infer", model, tmp_path / "nodata.npy", "-o", tmp_path / "s.h5")
    assert_one_error(r, code=1, contains=("nodata.npy",))
    assert not (tmp_path / "s.h5").exists()


def test_three_dimensional_operand_names_its_shape(tmp_path, rng):
    """A (2, 3, 4) operand: one line naming the operand's shape, exit 1 or 2."""
    a = save(tmp_path / "A.npy", rng.standard_normal((2, 3, 4)))
    b = save(tmp_path / "B.npy", rng.standard_normal((4, 2)))
    line = assert_one_error(run("matmul", a, b, "-o", tmp_path / "C.h5"), codes=(1, 2))
    assert "2x3x4" in line or "(2, 3, 4)" in line, line


def test_inspect_of_a_folder(tmp_path):
    """inspect of a folder: exit 1, one line naming it."""
    (tmp_path / "adir").mkdir()
    assert_one_error(run("inspect", tmp_path / "adir"), code=1, contains=("adir",))


def test_pack_into_missing_folder(done, tmp_path):
    """pack into a folder that does not exist: exit 1, one line, nothing created."""
    out, _, _ = done
    target = tmp_path / "nowhere" / "ONE.h5"
    assert_one_error(run("pack", out, target), code=1)
    assert not (tmp_path / "nowhere").exists()


def test_pack_over_user_file_with_overwrite_refused(done, tmp_path):
    """pack onto the user's text file, even with --overwrite: refused (only a file lrmpi
    wrote is replaced), the file intact."""
    out, _, _ = done
    user = tmp_path / "notes.txt"
    user.write_text("keep me")
    assert_one_error(run("pack", out, user, "--overwrite"), codes=(1, 2))
    assert user.read_text() == "keep me"


def test_status_words(tmp_path, ops):
    """inspect --status prints exactly one word: `deadline` for a stopped job, then
    `complete` after its resume; exit 0 both times."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "2")
    assert rc == 3, err
    r = run("inspect", out, "--status")
    assert r.returncode == 0 and r.stdout == "deadline\n", (r.stdout, r.stderr)
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--resume"))
    r = run("inspect", out, "--status")
    assert r.returncode == 0 and r.stdout == "complete\n", (r.stdout, r.stderr)


def test_plot_into_missing_folder_and_odd_extension(done, tmp_path):
    """inspect --plot into a missing folder, or to a name with an unknown extension: one line,
    exit 1 or 2, the checkpoint unchanged, no plot file."""
    out, _, _ = done
    before = snapshot(out + ".d")
    for target in (tmp_path / "no" / "p.png", tmp_path / "p.weird"):
        assert_one_error(run("inspect", out, "--plot", target), codes=(1, 2))
        assert not target.exists()
    assert snapshot(out + ".d") == before


def test_no_output_option_writes_nothing(tmp_path, ops):
    """matmul without -o: exit 0, the resolution lines, no file created in the folder."""
    a, b, _, _ = ops
    before = sorted(os.listdir(tmp_path))
    r = run("matmul", a, b, "--planes", "2", cwd=tmp_path)
    assert_ok(r)
    assert "resolution 3/3" in r.stderr + r.stdout
    assert sorted(os.listdir(tmp_path)) == before


def test_stop_message_agrees_with_the_file(tmp_path, ops):
    """A stop after resolution k: the log's stop line says k resolutions are on disk and the
    job file lists exactly k."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 2, "matmul", a, b, "-o", out, "--planes", "3")
    assert rc == 3, err
    with h5py.File(out, "r") as f:
        k = len(f["resolutions"])
    stop = [line for line in err.splitlines() if "stopping" in line]
    assert len(stop) == 1, err
    assert f"resolution {k}/5" in stop[0], (k, stop)
    assert attrs_of(out)["completed"] == k


def test_exit_4_message_says_nothing_on_disk(tmp_path, ops):
    """SIGTERM before the first resolution (the only worker sleeps in its first task): exit 4,
    the stop line says no resolution is on disk, status deadline."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    p = start("matmul", a, b, "-o", out, "--planes", "2", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "30"})
    try:
        limit = time.time() + 60
        while time.time() < limit:   # the job computes; its only worker sleeps for 30 s
            try:
                if attrs_of(out).get("phase") == "computing":
                    break
            except (OSError, KeyError):
                pass
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert p.returncode == 4, err
    stop = [line for line in err.splitlines() if "stopping" in line or "stopped" in line]
    assert stop and ("no resolution" in stop[-1] or "nothing" in stop[-1]), err
    assert attrs_of(out)["status"] == "deadline"
