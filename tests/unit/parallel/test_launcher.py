"""Launcher and MPI library: the mismatch checks and finding the library's mpiexec."""
import os
import stat

import pytest

from lrmpi import errors
from lrmpi.parallel import launcher

MPICH = {"version": "MPICH Version: 5.0.2", "family": "mpich", "path": None}
OMPI = {"version": "Open MPI v4.1.4", "family": "openmpi", "path": None}


@pytest.mark.parametrize("env, want", [
    ({}, (None, 1)),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, (None, 1)),  # a batch step: one process
    ({"OMPI_COMM_WORLD_SIZE": "3", "PMIX_RANK": "0"}, ("OMPI_COMM_WORLD_SIZE", 3)),
    ({"PMI_SIZE": "2", "PMI_RANK": "1"}, ("PMI_SIZE", 2)),
    # Open MPI's mpirun inside SLURM: its ranks inherit the daemons' step size (nodes)
    ({"OMPI_COMM_WORLD_SIZE": "1", "SLURM_STEP_NUM_TASKS": "2"}, ("OMPI_COMM_WORLD_SIZE", 1)),
    ({"SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_ID": "0"}, ("SLURM_STEP_NUM_TASKS", 3)),
])
def test_launcher_size_reads_the_launchers_own_variables(env, want):
    assert launcher.launcher_size(env) == want


def test_several_processes_each_alone_in_its_world_is_one_clear_error():
    err = launcher.check_world(1, lambda: OMPI, {"PMI_SIZE": "3", "PMI_RANK": "0"})
    assert isinstance(err, errors.LaunchError)
    msg = str(err)
    assert "started 3 processes (PMI_SIZE=3)" in msg and "Open MPI v4.1.4" in msg
    assert "\n" not in msg


def test_srun_without_a_pmi_names_the_plugin():
    err = launcher.check_world(1, lambda: MPICH, {"SLURM_STEP_NUM_TASKS": "2"})
    assert "srun --mpi=pmi2" in str(err)


def test_no_mpi4py_under_a_launcher_names_the_extra():
    err = launcher.check_world(1, lambda: None, {"PMI_SIZE": "2"})
    assert "mpi4py is not installed" in str(err)


@pytest.mark.parametrize("world, env", [
    (3, {"PMI_SIZE": "3"}),                      # a real 3-rank job
    (1, {}),                                     # one process, no launcher
    (1, {"PMI_SIZE": "1"}),                      # mpiexec -n 1
    (1, {"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}),  # plain batch step in an allocation
])
def test_matching_launches_pass(world, env):
    assert launcher.check_world(world, lambda: MPICH, env) is None


def test_mpich_under_open_mpis_launcher_is_refused_before_mpi_init():
    env = {"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "0"}
    err = launcher.check_before_init(MPICH, env)
    assert isinstance(err, errors.LaunchError) and "OMPI_COMM_WORLD_SIZE=3" in str(err)
    assert launcher.check_before_init(OMPI, env) is None
    assert launcher.check_before_init(MPICH, {"PMI_SIZE": "3"}) is None


def test_open_mpi_under_srun_without_a_pmi_is_refused_before_mpi_init():
    step = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0"}
    err = launcher.check_before_init(OMPI, step)
    assert isinstance(err, errors.LaunchError) and "--mpi=pmix" in str(err)
    assert launcher.check_before_init(OMPI, {**step, "PMIX_RANK": "0"}) is None  # --mpi=pmix
    assert launcher.check_before_init(OMPI, {**step, "PMI_RANK": "0"}) is None   # --mpi=pmi2
    # Open MPI's own mpirun inside SLURM: its ranks inherit the daemons' step
    assert launcher.check_before_init(OMPI, {**step, "OMPI_COMM_WORLD_SIZE": "1"}) is None
    assert launcher.check_before_init(OMPI, {"SLURM_STEP_NUM_TASKS": "1"}) is None
    assert launcher.check_before_init(MPICH, step) is None  # MPICH: singletons, after init


def _fake_launcher(folder, name, says):
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    exe.write_text(f"#!/bin/sh\necho '{says}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_find_mpiexec_takes_the_launcher_of_the_librarys_own_installation(tmp_path):
    # Debian-like: libmpi in /usr/lib/<triplet>/, launchers in /usr/bin, where plain
    # `mpiexec` is an alternatives link that may be another MPI's
    usr = tmp_path / "usr"
    (usr / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    lib = usr / "lib" / "x86_64-linux-gnu" / "libmpi.so.40"
    lib.write_bytes(b"")
    _fake_launcher(usr / "bin", "mpiexec", "HYDRA build details:")
    ompi = {**OMPI, "path": str(lib)}
    assert launcher.find_mpiexec(ompi) is None  # only another MPI's launcher there
    want = _fake_launcher(usr / "bin", "mpiexec.openmpi", "mpiexec.openmpi (OpenRTE) 4.1.4")
    assert launcher.find_mpiexec(ompi) == want
    # a venv with the mpich wheel: venv/lib/libmpi.so.12, venv/bin/mpiexec
    venv = tmp_path / "venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "libmpi.so.12").write_bytes(b"")
    want = _fake_launcher(venv / "bin", "mpiexec", "HYDRA build details:")
    assert launcher.find_mpiexec({**MPICH, "path": str(venv / "lib" / "libmpi.so.12")}) == want
    assert launcher.find_mpiexec({**MPICH, "path": None}) is None


def test_describe_names_this_processes_library():
    MPI = pytest.importorskip("mpi4py.MPI")
    lib = launcher.describe(MPI)
    assert lib["family"] in ("mpich", "openmpi", "other") and lib["version"]
    if lib["path"]:
        assert os.path.exists(lib["path"])
