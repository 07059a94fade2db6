"""Ninth pass, messages: inspect / --status, errors' wording, exit codes."""
import os

import pytest

from adversary import assert_ok, assert_one_error, attrs_of, run


def test_status_with_plot_draws_or_refuses(done, tmp_path):
    out = done[0]
    png = tmp_path / "q.png"
    res = run("inspect", out, "--plot", png, "--status")
    assert res.returncode != 0 or png.exists(), (res.stdout, res.stderr)


def test_resume_without_output_refused(ops):
    a, b, _, _ = ops
    res = run("matmul", a, b, "--planes", "2", "--resume")
    assert_one_error(res, code=2, contains=("resume",))


def test_target_without_final_crt_one_line(ops, tmp_path):
    a, b, _, _ = ops
    out = tmp_path / "T.h5"
    res = run("matmul", a, b, "-o", out, "--target", "fp32")
    assert_one_error(res, code=2, contains=("crt",))
    assert not out.exists() and not os.path.exists(str(out) + ".d")


def test_inspect_two_paths_is_usage_exit_2(done):
    out = done[0]
    res = run("inspect", out, out)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "unrecognized arguments" in res.stderr


@pytest.mark.parametrize("opt,value,words", [
    ("--planes", "0", ("planes", "1..16", "0")),
    ("--bits", "8", ("bits", "1..7", "8")),
    ("--cutoff", "0", ("cutoff", "0")),
    ("--worker-timeout", "nan", ("worker-timeout", "nan")),
    ("--max-restarts", "-1", ("max-restarts", "-1")),
])
def test_out_of_range_value_named_with_value(ops, tmp_path, opt, value, words):
    a, b, _, _ = ops
    out = tmp_path / "R.h5"
    res = run("matmul", a, b, "-o", out, opt, value)
    assert_one_error(res, code=2, contains=words)
    assert not out.exists()


def test_resume_with_other_moduli_names_both(ops, tmp_path):
    a, b, _, _ = ops
    out = tmp_path / "X.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--moduli", "2"))
    before = attrs_of(out)
    res = run("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--moduli", "3",
              "--resume")
    err = assert_one_error(res, codes=(1, 2), contains=("moduli", "2", "3"))
    assert "resume" in err
    assert attrs_of(out)["job_id"] == before["job_id"]


def test_resume_of_complete_crt_job_says_nothing_to_do(ops, tmp_path):
    a, b, _, _ = ops
    out = tmp_path / "X.h5"
    args = ("matmul", a, b, "-o", out, "--planes", "2", "--final", "crt", "--moduli", "2")
    assert_ok(run(*args))
    res = run(*args, "--resume")
    assert_ok(res)
    assert "already complete" in res.stderr + res.stdout
    assert attrs_of(out)["status"] == "complete"


def test_status_word_of_a_deadline_stop_and_its_message(ops, tmp_path):
    a, b, _, _ = ops
    out = tmp_path / "S.h5"
    res = run("matmul", a, b, "-o", out, "--planes", "2", "--deadline", "2",
              env={"LRMPI_TEST_SLOW_RANK": "0", "LRMPI_TEST_SLOW_S": "1"})
    assert res.returncode == 3, res.stderr
    st = run("inspect", out, "--status")
    assert st.returncode == 0 and st.stdout.strip() == "deadline", st
    table = run("inspect", out)
    assert table.returncode == 0
    assert "status=deadline" in table.stdout and "deadline reached" in table.stdout


@pytest.mark.parametrize("opts", [("--overwrite",), ("--keep", "latest"), ("--write", "ranks")])
def test_checkpoint_options_without_output_refused(ops, opts):
    """Options about the checkpoint without -o (an oddity of the ninth pass: they were
    dropped silently, as --resume was): one line, exit 2."""
    a, b, _, _ = ops
    res = run("matmul", a, b, "--planes", "2", *opts)
    assert_one_error(res, code=2, contains=("-o",))
