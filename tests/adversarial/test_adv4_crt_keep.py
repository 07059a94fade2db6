"""Fourth adversarial pass, area 2: CRT, --write ranks, --keep and mixed resumes — options
added on a resume, operands respelled, resumes racing, an --overwrite that stops early."""
import os
import signal
import subprocess

import h5py
import numpy as np

from adversary import (SLOW, assert_ok, assert_one_error, attrs_of, cmd, kill_group, load,
                      run, save, snapshot, start, stop_after)


def _ref(tmp_path, a, b, *opts, name="R.h5"):
    ref = tmp_path / name
    assert_ok(run("matmul", a, b, "-o", ref, *opts))
    return load(ref)


def _refused_unchanged_or_same(r, folder, before, tmp_path, a, b, *opts):
    """A resume `r` that was either refused with one line, `folder` unchanged (True), or
    completed bit-identical to an uninterrupted run with `opts` (False)."""
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        assert snapshot(folder) == before
        return True
    assert np.array_equal(load(r.args[r.args.index("-o") + 1])[0], _ref(tmp_path, a, b, *opts)[0])
    return False


def test_resume_of_complete_job_adding_final_crt(tmp_path, ops):
    """A complete --planes 2 result resumed with --final crt added: refused with one line
    and nothing changed, or a CRT resolution appended whose bound is no larger than the
    layers' and covers the product."""
    a, b, A, B = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    before = snapshot(tmp_path)
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--moduli", "8",
            "--resume")
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        assert snapshot(tmp_path) == before
        return
    C, attrs = load(out)
    assert attrs["bound_abs"] <= 1.2e-2 and np.abs(C - A @ B).max() <= attrs["bound_abs"]


def test_two_resumes_started_at_once(tmp_path, ops):
    """A stopped job resumed twice at the same instant (a resubmitted script): one resume
    completes, the other is refused with one line, and the result equals an uninterrupted
    run bit for bit."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3")
    assert rc == 3, err
    procs = [subprocess.Popen(cmd("matmul", a, b, "-o", out, "--planes", "3", "--resume", n=n),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in (None, 2)]
    res = [(p, *p.communicate(timeout=120)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in res)
    assert codes[0] == 0, [e for _, _, e in res]
    for p, o, e in res:
        if p.returncode != 0:
            assert_one_error(subprocess.CompletedProcess(p.args, p.returncode, o, e), code=1)
    assert np.array_equal(load(out)[0], _ref(tmp_path, a, b, "--planes", "3")[0])


def test_resume_with_operand_rewritten_as_float32_of_equal_values(tmp_path, rng):
    """A stopped job whose operand A (float32-representable values) is rewritten as a
    float32 .npy of the same values: the resume is refused with one line and nothing
    changed, or it completes bit-identical to an uninterrupted run."""
    A = rng.standard_normal((40, 24)).astype(np.float32).astype(np.float64)
    B = rng.standard_normal((24, 16))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3")
    assert rc == 3, err
    save(tmp_path / "A.npy", A.astype(np.float32))
    before = snapshot(out + ".d")
    r = run("matmul", a, b, "-o", out, "--planes", "3", "--resume")
    _refused_unchanged_or_same(r, out + ".d", before, tmp_path, a, b, "--planes", "3")


def test_resume_naming_operands_as_h5_datasets(tmp_path, ops):
    """Stopped with .npy operands, resumed with the same arrays as FILE.h5:/dataset: the
    same inputs, so it completes bit-identical (or is refused with one line, unchanged)."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3", "--keep", "latest")
    assert rc == 3, err
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["A"], f["B"] = A, B
    before = snapshot(out + ".d")
    r = run("matmul", f"{tmp_path}/in.h5:/A", f"{tmp_path}/in.h5:/B", "-o", out, "--planes",
            "3", "--keep", "latest", "--resume")
    _refused_unchanged_or_same(r, out + ".d", before, tmp_path, a, b, "--planes", "3")


def test_overwrite_of_crt_result_stopped_early_keeps_it(tmp_path, ops):
    """A complete CRT result replaced by --overwrite of a layered run of the same inputs
    that is stopped after its first resolution: exit 3 and the file still holds the CRT
    result (it stays until the new run has one at least as good)."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--moduli", "8"))
    old, old_attrs = load(out)
    p = start("matmul", a, b, "-o", out, "--planes", "3", "--overwrite", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.6"})
    try:
        # the old file lists resolutions already: wait for the new job's own log line
        for line in p.stderr:
            if "resolution 1/" in line:
                break
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert p.returncode == 3, err
    C, attrs = load(out)
    assert np.array_equal(C, old) and attrs["bound_abs"] == old_attrs["bound_abs"]


def test_lshape_tensor_scale_keep_latest_ranks_writing_equals_plain(tmp_path, ops):
    """--order lshape --scale tensor --keep latest --write ranks at 3 ranks: the job folder
    keeps one resolution (with its rank files), and C equals a 1-rank root-writing run's."""
    a, b, _, _ = ops
    opts = ["--planes", "3", "--order", "lshape", "--scale", "tensor"]
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, *opts, "--keep", "latest", "--write", "ranks", n=3))
    with h5py.File(out, "r") as f:
        assert list(f["resolutions"]) == ["003"]
    assert np.array_equal(load(out)[0], _ref(tmp_path, a, b, *opts)[0])
    assert attrs_of(out)["status"] == "complete"


def test_stopped_crt_resumed_with_target_instead_of_moduli(tmp_path, ops):
    """A CRT job (--moduli 6) stopped after resolution 1, resumed with --target fp32 in
    place of --moduli: refused with one line and nothing changed, or completed with a
    bound that meets fp32 and covers the product."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "2", "--final", "crt",
                         "--moduli", "6")
    assert rc == 3, err
    before = snapshot(out + ".d")
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--target", "fp32",
            "--resume")
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        assert snapshot(out + ".d") == before
        return
    C, attrs = load(out)
    assert attrs["bound_rel"] <= 6e-8 and np.abs(C - A @ B).max() <= attrs["bound_abs"]
