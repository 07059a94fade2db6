"""BLAS threads per rank under MPI launchers (lrmpi.blas_threads)."""
import os
import subprocess
import sys

from lrmpi.blas_threads import share


def test_not_under_a_launcher_or_alone_leaves_blas_alone():
    assert share({}, cores=8, bound_cores=8) is None
    assert share({"PMI_SIZE": "1"}, cores=8, bound_cores=8) is None


def test_ranks_on_a_node_share_its_cores():
    assert share({"MPI_LOCALNRANKS": "3", "PMI_SIZE": "6"}, cores=2, bound_cores=2) == 1
    assert share({"MPI_LOCALNRANKS": "2"}, cores=8, bound_cores=8) == 4
    assert share({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, cores=16, bound_cores=16) == 4
    assert share({"SLURM_NTASKS": "2"}, cores=8, bound_cores=8) == 4  # world size as bound


def test_a_rank_bound_to_fewer_cores_uses_exactly_those():
    assert share({"MPI_LOCALNRANKS": "4"}, cores=16, bound_cores=2) == 2


def test_the_users_setting_wins_and_the_command_gets_one_thread_per_core():
    code = "import os, lrmpi; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {**os.environ, "MPI_LOCALNRANKS": "64", "PMI_SIZE": "64"}
    env.pop("OPENBLAS_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "1", out.stderr
    env["OPENBLAS_NUM_THREADS"] = "3"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "3", out.stderr
