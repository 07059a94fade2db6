"""The real CLI started by a launcher that is not of mpi4py's MPI: one line, exit 1,
nothing written; a plain batch step inside an allocation still runs."""
import os
import shutil
import subprocess
import sys

import pytest
from launching import run

from lrmpi.jobs.checkpoint import Checkpoint
from lrmpi.parallel import launcher

pytest.importorskip("mpi4py")


def _library():
    code = "from lrmpi.parallel import comm; print(comm.library(probe=True)['family'])"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60).stdout.strip()


def one_error_line(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.startswith("lrmpi: error")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_srun_without_pmi_each_task_alone_is_refused(operands, tmp_path):
    # what `srun --mpi=none -n 3` gives every task: SLURM's step variables, no PMI
    _, _, a, b = operands
    env = {"SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0",
           "SLURM_JOB_ID": "12345"}
    p = run("matmul", a, b, "-o", tmp_path / "c.h5", env=env, timeout=60)
    assert p.returncode == 1
    assert "srun --mpi=pmi2" in one_error_line(p.stderr)
    assert not (tmp_path / "c.h5").exists()


def test_a_plain_batch_step_in_an_allocation_runs(operands, tmp_path):
    # the job script itself: SLURM_NTASKS of the allocation, no step, no launcher
    _, _, a, b = operands
    env = {"SLURM_NTASKS": "3", "SLURM_NPROCS": "3", "SLURM_PROCID": "0"}
    p = run("matmul", a, b, "-o", tmp_path / "c.h5", "--planes", 2, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert Checkpoint(tmp_path / "c.h5").attrs["status"] == "complete"


def test_mpich_under_open_mpis_launcher_variables_is_refused_before_mpi_init(operands,
                                                                             tmp_path):
    if _library() != "mpich":
        pytest.skip("mpi4py's MPI is not of the MPICH family")
    _, _, a, b = operands
    env = {"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "0", "PMIX_RANK": "0"}
    p = run("matmul", a, b, "-o", tmp_path / "c.h5", env=env, timeout=60)
    assert p.returncode == 1
    line = one_error_line(p.stderr)
    assert "OMPI_COMM_WORLD_SIZE=3" in line and "MPICH" in line
    assert "Fatal error" not in p.stderr  # MPI_Init never ran
    assert not (tmp_path / "c.h5").exists()


def _foreign_launcher():
    """An mpiexec on this machine that belongs to another MPI than mpi4py's."""
    family = _library()
    candidates = {"mpich": ["mpiexec.openmpi", "orterun", "prterun"],
                  "openmpi": ["mpiexec.mpich", "mpiexec.hydra"]}.get(family, [])
    for name in candidates:
        exe = shutil.which(name)
        if exe and (family != "openmpi" or launcher._launcher_of(exe, "mpich")):
            return exe, family
    return None, family


def test_a_real_launcher_of_another_mpi_is_one_clear_line(operands, tmp_path):
    exe, family = _foreign_launcher()
    if exe is None:
        pytest.skip(f"no launcher of an MPI other than mpi4py's ({family}) installed")
    _, _, a, b = operands
    extra = ["--oversubscribe"] if family == "mpich" else []  # Open MPI's launcher
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    p = subprocess.run([exe, *extra, "-n", "3", sys.executable, "-m", "lrmpi", "matmul",
                        str(a), str(b), "-o", str(tmp_path / "c.h5")], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode != 0
    line = one_error_line(p.stderr)  # printed by the process of launcher rank 0 only
    assert "the launcher is not of mpi4py's MPI" in line
    assert not (tmp_path / "c.h5").exists()
