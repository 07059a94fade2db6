"""Ninth pass, safety of user files: the stats file, pack, plot and -o through hard links
and odd names; an earlier result must stay as it was when a new job stops early."""
import glob
import os

import numpy as np
import pytest

from adversary import (assert_ok, assert_one_error, attrs_of, digest, job_folder, load,
                       mlp_onnx, run, save, snapshot)

SLOW_ROOT = {"LRMPI_TEST_SLOW_RANK": "0", "LRMPI_TEST_SLOW_S": "1"}


def early_overwrite(a, b, out, env):
    """An --overwrite of `out` that stops after resolution 1 (worse than the old result)."""
    return run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite", "--deadline", "2",
               env={**SLOW_ROOT, **env})


@pytest.mark.parametrize("via", ["name", "symlink"])
def test_stats_file_never_replaces_a_user_file(ops, tmp_path, via):
    a, b, _, _ = ops
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not lrmpi's\n")
    target = notes
    if via == "symlink":
        target = tmp_path / "stats.json"
        os.symlink("notes.txt", target)
    res = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "2",
              env={"LRMPI_STATS_FILE": str(target)})
    assert notes.read_text() == "my notes, not lrmpi's\n", res.stderr


@pytest.mark.parametrize("via", ["hardlink", "symlink"])
def test_stats_file_linked_to_old_resolution_keeps_earlier_result(done, tmp_path, via):
    out, a, b, A, B = done
    C0, _ = load(out)
    res3 = os.path.join(job_folder(out), "res003.h5")
    before = snapshot(str(out) + ".d")
    link = tmp_path / "stats.json"
    (os.link if via == "hardlink" else os.symlink)(res3, link)
    early_overwrite(a, b, out, {"LRMPI_STATS_FILE": str(link)})
    assert attrs_of(out)["status"] == "complete"
    assert snapshot(str(out) + ".d") == before
    C, _ = load(out)
    assert np.array_equal(C, C0)


def test_stats_file_hardlinked_to_job_file_refused_old_kept(done, tmp_path):
    out, a, b, A, B = done
    link = tmp_path / "S.json"
    os.link(out, link)
    before = digest(out)
    res = early_overwrite(a, b, out, {"LRMPI_STATS_FILE": str(link)})
    assert_one_error(res, code=2, contains=("LRMPI_STATS_FILE",))
    assert digest(out) == before


def test_stats_file_hardlinked_to_an_input_refused(ops, tmp_path):
    a, b, _, _ = ops
    link = tmp_path / "SA.json"
    os.link(a, link)
    before = digest(a)
    res = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "2",
              env={"LRMPI_STATS_FILE": str(link)})
    assert_one_error(res, code=2, contains=("input",))
    assert digest(a) == before


def test_pack_overwrite_onto_a_hardlink_of_the_checkpoint(done, tmp_path):
    out, a, b, A, B = done
    C0, _ = load(out)
    link = tmp_path / "other.h5"
    os.link(out, link)
    before = digest(out)
    res = run("pack", out, link, "--overwrite")
    if res.returncode == 0:
        C1, _ = load(link)
        assert np.array_equal(C1, C0)
    else:
        assert_one_error(res)
    assert digest(out) == before
    assert np.array_equal(load(out)[0], C0)


def test_plot_overwrite_onto_hardlinks_of_input_and_resolution(done, tmp_path):
    out, a, b, A, B = done
    pa, pr = tmp_path / "a.png", tmp_path / "r.png"
    os.link(a, pa)
    os.link(os.path.join(job_folder(out), "res001.h5"), pr)
    da, dd = digest(a), snapshot(str(out) + ".d")
    for target in (pa, pr):
        res = run("inspect", out, "--plot", target, "--overwrite")
        assert res.returncode in (0, 1, 2) and "Traceback" not in res.stderr
    assert digest(a) == da
    assert snapshot(str(out) + ".d") == dd
    assert run("inspect", out, "--status").stdout.strip() == "complete"


def test_overwrite_of_a_hardlinked_job_file_other_name_keeps_its_result(done, tmp_path, rng):
    out, a, b, A, B = done
    C0, _ = load(out)
    twin = tmp_path / "twin.h5"
    os.link(out, twin)
    snap = snapshot(str(out) + ".d")
    A2 = save(tmp_path / "A2.npy", rng.standard_normal((40, 24)))
    res = run("matmul", A2, b, "-o", twin, "--planes", "2", "--overwrite")
    assert res.returncode in (0, 1), res.stderr
    assert "Traceback" not in res.stderr
    assert snapshot(str(out) + ".d") == snap
    assert np.array_equal(load(out)[0], C0)
    if res.returncode == 0:
        C2, _ = load(twin)
        assert np.allclose(C2, np.load(A2) @ B, rtol=0, atol=1e-2)


@pytest.mark.parametrize("name", ["a b:c%d.h5", "-é;$(x)`y`.h5"])
def test_odd_output_names_run_resume_pack_inspect(ops, tmp_path, name):
    a, b, _, _ = ops
    out = tmp_path / name
    assert_ok(run("matmul", a, b, "--planes", "2", f"--output={out}"))
    assert_ok(run("matmul", a, b, "--planes", "2", f"--output={out}", "--resume"))
    one = tmp_path / ("packed " + name)
    assert_ok(run("pack", out, one))
    assert np.array_equal(load(one)[0], load(out)[0])
    st = run("inspect", "--status", out)
    assert st.returncode == 0 and st.stdout.strip() == "complete"
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["A.npy", "B.npy", name, name + ".d", "packed " + name])


def test_cache_folder_with_odd_characters(tmp_path, rng):
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    x = save(tmp_path / "x.npy", rng.standard_normal((3, 16)).astype(np.float32))
    cache = tmp_path / "ca che:%\nx"
    out = tmp_path / "I.h5"
    assert_ok(run("infer", m, x, "-o", out, "--planes", "2", "--rule", "none",
                  env={"LRMPI_CACHE_DIR": str(cache)}))
    assert glob.glob(os.path.join(glob.escape(str(cache)), "graph-*")) or \
        glob.glob(os.path.join(glob.escape(str(cache)), "norms3-*"))
    assert sorted(os.listdir(tmp_path)) == sorted(["m.onnx", "x.npy", "ca che:%\nx",
                                                   "I.h5", "I.h5.d"])
