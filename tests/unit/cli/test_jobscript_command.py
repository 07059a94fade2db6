"""The job scripts: one source (package data = the repository's jobscripts/), what
`lrmpi jobscript` fills in, and what the scripts do with lrmpi's exit code, run by
bash against stand-ins for srun, mpiexec, scontrol and Python (tests/slurm submits
them to a real SLURM)."""
import os
import shlex
import subprocess
import sys

import pytest

from lrmpi import jobscripts
from lrmpi.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))


def printed(capsys, *args):
    assert main(["jobscript", *map(str, args)]) == 0
    return capsys.readouterr().out


def knobs(script):
    """{NAME: [words]} of the EDIT block, as bash reads them."""
    block = script.split("# ---- EDIT")[1].split("\n# ----")[0].split("\n", 1)[1]
    code = block + "\nfor v in KIND OUT MAX_RESTARTS PYTHON SITE_ENV DEADLINE_OK; do " \
                   "printf '%s=%s\\0' \"$v\" \"${!v}\"; done\n" \
                   "for x in \"${INPUTS[@]}\"; do printf 'INPUTS=%s\\0' \"$x\"; done\n" \
                   "for x in \"${OPTIONS[@]}\"; do printf 'OPTIONS=%s\\0' \"$x\"; done\n"
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
    got = {}
    for item in filter(None, out.stdout.split("\0")):
        name, value = item.split("=", 1)
        got.setdefault(name, []).append(value)
    return got


@pytest.mark.parametrize("name", jobscripts.TEMPLATES)
def test_the_repositorys_job_scripts_are_the_packages(name):
    with open(os.path.join(ROOT, "jobscripts", name)) as f:
        assert f.read() == jobscripts.template(name), \
            f"jobscripts/{name} differs from lrmpi/jobscripts/{name}: copy it over"


@pytest.mark.parametrize("kind", sorted(jobscripts.KINDS))
def test_template_option_prints_the_shipped_template(kind, capsys):
    assert printed(capsys, kind, "--template") == jobscripts.template(jobscripts.KINDS[kind][0])


def test_printed_script_has_absolute_paths_and_the_jobs_options(tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    site = tmp_path / "site.env"
    site.write_text("module load mpi\n")
    text = printed(capsys, "matmul", "a b*.npy", "data.h5:/x y", "-o", "out dir/C.h5",
                   "--planes", 6, "--no-fsync", "--resume", "--ntasks", 8, "--time", "1:00:00",
                   "--sbatch=--partition=long", "--site-env", "site.env", "--max-restarts", 1)
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    got = knobs(text)
    assert got["INPUTS"] == [str(tmp_path / "a b*.npy"), f"{tmp_path / 'data.h5'}:/x y"]
    assert got["OUT"] == [str(tmp_path / "out dir" / "C.h5")]
    assert got["OPTIONS"] == ["--planes", "6", "--no-fsync"]  # --resume is the script's
    assert got["PYTHON"] == [sys.executable] and got["SITE_ENV"] == [str(site)]
    assert got["MAX_RESTARTS"] == ["1"] and got["DEADLINE_OK"] == ["yes"]
    for line in ("#SBATCH --ntasks=8", "#SBATCH --time=1:00:00", "#SBATCH --partition=long",
                 "#SBATCH --job-name=lrmpi-matmul", "#SBATCH --output=lrmpi-matmul-%j.log"):
        assert line in text.splitlines()
    assert "jobscripts/" not in text  # nothing relative to a repository


def test_python_and_mpiexec_paths_become_absolute_names_stay_names(tmp_path, capsys,
                                                                     monkeypatch):
    """The script starts in the submitting folder: a relative --python / --mpiexec is
    made absolute here; a bare name stays a name, for the node's PATH (after --site-env)."""
    monkeypatch.chdir(tmp_path)
    text = printed(capsys, "matmul-mpiexec", "a.npy", "b.npy", "-o", "C.h5",
                   "--python", "venv/bin/python", "--mpiexec", "../mpi/bin/mpiexec")
    assert knobs(text)["PYTHON"] == [str(tmp_path / "venv" / "bin" / "python")]
    assert f"MPIEXEC={tmp_path.parent / 'mpi' / 'bin' / 'mpiexec'}" in text
    named = printed(capsys, "matmul-mpiexec", "a.npy", "b.npy", "-o", "C.h5",
                    "--python", "python3", "--mpiexec", "mpirun")
    assert knobs(named)["PYTHON"] == ["python3"] and "MPIEXEC=mpirun" in named


def test_printed_infer_script_takes_the_options_of_infer(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = knobs(printed(capsys, "infer-mpiexec", "m.onnx", "x.npy", "-o", "s.h5",
                        "--no-adaptive", "--planes", 3, "--no-deadline-ok",
                        "--mpiexec", "/opt/mpi/bin/mpiexec"))
    assert got["KIND"] == ["infer"] and got["OPTIONS"] == ["--planes", "3", "--no-adaptive"]
    assert got["DEADLINE_OK"] == ["no"]


@pytest.mark.parametrize("args, msg", [
    (["matmul", "A.npy", "B.npy"], "-o OUT is needed"),
    (["matmul", "A.npy", "B.npy", "-o", "c.h5", "--max-restarts", "-1"], "--max-restarts"),
    (["matmul", "A.npy", "B.npy", "-o", "c.h5", "--worker-timeout", "0"], "--worker-timeout"),
    (["matmul", "A.npy", "B.npy", "-o", "c.h5", "--sbatch", "partition=x"], "--sbatch"),
    (["matmul", "A.npy", "B.npy", "-o", "c.h5", "--site-env", "/no/such/file"], "--site-env"),
    (["infer", "m.onnx", "x.npy", "-o", "s.h5", "--gray", "1"], "--gray"),
    (["matmul", "A.npy", "B.npy", "-o", "c.h5", "--time", "1:00\nrm x"], "--time"),
    (["matmul", "A.npy", "B.npy", "-o", "c.h5", "--job-name", "a b"], "--job-name"),
])
def test_bad_jobscript_options_are_one_line(args, msg, capsys):
    assert main(["jobscript", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


# --- what the scripts do, with stand-ins for srun / mpiexec / scontrol / Python ---

STANDIN = """#!/bin/bash
# records its arguments (one a line) and exits with $FAKE_RC; `python -m lrmpi inspect
# OUT --status` prints $FAKE_STATUS
if [ "${3:-}" = inspect ]; then echo "$FAKE_STATUS"; exit 0; fi
printf '%s\\n' "$(basename "$0")" "$@" "" >> "$FAKE_LOG"
exit "${FAKE_RC:-0}"
"""


@pytest.fixture
def standins(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("srun", "scontrol", "mpiexec", "python"):
        (bin_dir / name).write_text(STANDIN)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run_script(tmp_path, standins, kind, options, rc, status="complete", restart=0,
               deadline_ok=True):
    text = jobscripts.fill(jobscripts.template(jobscripts.KINDS[kind][0]), {
        "KIND": jobscripts.KINDS[kind][1], "INPUTS": ["A b.npy", "B*.npy"], "OUT": "C.h5",
        "OPTIONS": options, "PYTHON": str(standins / "python"), "MAX_RESTARTS": "2",
        "DEADLINE_OK": "yes" if deadline_ok else "no",
        **({"MPIEXEC": str(standins / "mpiexec")} if "mpiexec" in kind else {})}, {})
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{standins}:{os.environ['PATH']}", "FAKE_RC": str(rc),
           "FAKE_STATUS": status, "FAKE_LOG": str(log), "SLURM_JOB_ID": "77",
           "SLURM_NTASKS": "3", "SLURM_SUBMIT_DIR": str(tmp_path),
           "SLURM_RESTART_COUNT": str(restart)}
    p = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                       timeout=60)
    calls = log.read_text().split("\n") if log.exists() else []
    return p, calls


def launched(calls):
    """The lrmpi arguments of the launcher's call: what follows `-m lrmpi`."""
    i = calls.index("lrmpi")
    return calls[i + 1:calls.index("", i) if "" in calls[i:] else None]


@pytest.mark.parametrize("rc, status, requeue", [
    (0, "complete", False),
    (0, "deadline", True),   # --deadline-ok: stopped with a resolution on disk
    (1, "failed", False),
    (2, "complete", False),
    (4, "running", True),    # stopped with nothing of these inputs on disk
    (130, "deadline", False),
])
def test_srun_script_passes_lrmpis_exit_code_through_and_requeues_a_stopped_job(
        tmp_path, standins, rc, status, requeue):
    p, calls = run_script(tmp_path, standins, "matmul", ["--planes", "4"], rc, status)
    assert p.returncode == rc, p.stderr  # never 4 -> 0, never 1 -> 0
    assert ("requeue" in calls) == requeue, calls
    args = launched(calls)
    assert args[:5] == ["matmul", "A b.npy", "B*.npy", "-o", "C.h5"]
    assert args[5:] == ["--planes", "4", "--resume", "--deadline-ok"]


def test_srun_script_without_deadline_ok_exits_3_and_stops_requeueing_at_the_limit(
        tmp_path, standins):
    p, calls = run_script(tmp_path, standins, "matmul", [], 3, "deadline", deadline_ok=False)
    assert p.returncode == 3 and "requeue" in calls and "--deadline-ok" not in calls
    p, calls = run_script(tmp_path, standins, "matmul", [], 3, "deadline", restart=2,
                          deadline_ok=False)
    assert p.returncode == 3 and "requeue" not in calls
    assert "stopped at the deadline after 2 restart(s)" in p.stdout


def test_options_reach_lrmpi_word_for_word(tmp_path, standins):
    options = ["--deadline", "1h 30m", "*", "$HOME", "--gray", "0.2,0.9"]
    _, calls = run_script(tmp_path, standins, "infer", options, 0)
    assert launched(calls)[5:11] == options


@pytest.mark.parametrize("kind", ["matmul", "matmul-mpiexec"])
def test_overwrite_replaces_on_the_first_run_and_resumes_once_requeued(tmp_path, standins,
                                                                       kind):
    _, calls = run_script(tmp_path, standins, kind, ["--overwrite", "--planes", "2"], 0)
    args = launched(calls)
    assert "--overwrite" in args and "--resume" not in args
    _, calls = run_script(tmp_path, standins, kind, ["--overwrite", "--planes", "2"], 0,
                          restart=1)
    args = launched(calls)
    assert "--resume" in args and "--overwrite" not in args


@pytest.mark.parametrize("rc", [0, 1, 3, 4, 130])
def test_mpiexec_script_is_lrmpis_exit_code_and_lets_lrmpi_requeue(tmp_path, standins, rc):
    p, calls = run_script(tmp_path, standins, "matmul-mpiexec", ["--planes", "4"], rc)
    assert p.returncode == rc
    assert calls[:3] == ["mpiexec", "-n", "3"]
    args = launched(calls)
    assert args[5:] == ["--planes", "4", "--resume", "--deadline-ok", "--requeue",
                        "--max-restarts", "2"]
    assert "scontrol" not in calls


def test_hostile_words_stay_data(tmp_path, capsys, monkeypatch):
    """A newline or quote in a path or option never becomes a line of shell: values
    are quoted, the header comment escapes them."""
    monkeypatch.chdir(tmp_path)
    evil = "a\ntouch pwned #'$(touch pwned2)'.npy"
    # (an option of free text: --deadline and the numbers are range-checked at print time)
    text = printed(capsys, "infer", evil, "D.npy", "-o", "c.h5", "--model-output",
                   "y\n;touch x")
    got = knobs(text)
    assert got["INPUTS"][0] == str(tmp_path / evil)
    assert got["OPTIONS"] == ["--model-output", "y\n;touch x"]
    header = text.splitlines()[1]
    assert header.startswith("# written by lrmpi") and "\\n" in header
    # the script up to its first command, run by bash: nothing of the words was executed
    subprocess.run(["bash", "-c", text.split("set -euo pipefail")[0]], cwd=tmp_path, check=True)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(("pwned", "x"))]


def test_fill_refuses_a_knob_the_template_lacks():
    with pytest.raises(KeyError):
        jobscripts.fill(jobscripts.template("srun.sbatch"), {"MPIEXEC": "x"}, {})
    assert shlex.split(jobscripts.shell_value(["a b", "*"])[1:-1]) == ["a b", "*"]
