"""Fifth adversarial pass, area 8: messages — an operand spelled with an empty dataset
name, deadlines outside the grammar, a model that is a folder, shapes that do not chain (both
named, printed once at three ranks), option ranges named, a job folder gone."""
import os
import shutil

import numpy as np
import pytest

from adversary import assert_one_error, job_folder, run, save


def test_operand_with_an_empty_dataset_name(tmp_path, ops):
    """`A.npy:` and `in.h5:` (a colon, then nothing): one line naming what was given."""
    import h5py
    a, b, _, _ = ops
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["A"] = np.ones((3, 24))
    for bad in (f"{a}:", f"{tmp_path}/in.h5:"):
        r = run("matmul", bad, b, "-o", tmp_path / "C.h5")
        line = assert_one_error(r, codes=(1, 2))
        assert os.path.basename(bad.rstrip(":")) in line, line
        assert not (tmp_path / "C.h5").exists()


@pytest.mark.parametrize("value", ["1h30", "30m1h", "+90", "1e3"])
def test_deadline_spellings_outside_the_grammar_named(tmp_path, ops, value):
    """A last part without its unit, parts out of order, a sign, an exponent: one line that
    names `--deadline` and quotes the value, exit 2, nothing made."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--deadline", value)
    assert_one_error(r, code=2, contains=("--deadline", value))
    assert not (tmp_path / "C.h5").exists()


def test_model_that_is_a_folder(tmp_path, rng):
    """A model path that is a folder (`model.onnx/`): one line naming it, exit 1."""
    (tmp_path / "model.onnx").mkdir()
    d = save(tmp_path / "X.npy", rng.standard_normal((3, 16)))
    r = run("infer", tmp_path / "model.onnx", d, "-o", tmp_path / "s.h5")
    assert_one_error(r, code=1, contains=("model.onnx",))
    assert not (tmp_path / "s.h5").exists()


def test_inner_dimensions_that_do_not_chain_at_three_ranks(tmp_path, rng):
    """(40x24) @ (23x16) under `mpiexec -n 3`: one line, printed once, naming both inner
    sizes, exit 1, nothing made."""
    a = save(tmp_path / "A.npy", rng.standard_normal((40, 24)))
    b = save(tmp_path / "B.npy", rng.standard_normal((23, 16)))
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", n=3)
    line = assert_one_error(r, code=1, contains=("24", "23"))
    assert r.stderr.count(line) == 1
    assert not (tmp_path / "C.h5").exists()


@pytest.mark.parametrize("opt, value, words", [
    ("--planes", "0", ("planes", "16")),
    ("--bits", "8", ("bits", "7")),
    ("--moduli", "17", ("moduli", "16")),
    ("--margin", "-1", ("margin",)),
    ("--worker-timeout", "0", ("worker-timeout",)),
])
def test_option_out_of_range_names_option_and_range(tmp_path, ops, opt, value, words):
    """An option one past its range: one line naming the option (and its range), exit 2."""
    a, b, _, _ = ops
    extra = ["--final", "crt"] if opt == "--moduli" else []
    extra += ["--deadline", "60"] if opt == "--margin" else []
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", opt, value, *extra)
    assert_one_error(r, code=2, contains=words)
    assert not (tmp_path / "C.h5").exists()


def test_job_folder_gone_message_says_what_is_missing(tmp_path, done):
    """The job's folder deleted by hand: `inspect`, `--resume` and `pack` each say in one
    line that the resolution files are missing (naming the folder or a file), exit 1."""
    out, a, b, _, _ = done
    folder = job_folder(out)
    shutil.rmtree(folder)
    job = os.path.basename(folder)
    for r in (run("inspect", out), run("pack", out, tmp_path / "P.h5"),
              run("matmul", a, b, "-o", out, "--planes", "2", "--resume")):
        line = assert_one_error(r, code=1)
        assert job in line or "res00" in line or "missing" in line.lower(), line
    assert not (tmp_path / "P.h5").exists()
