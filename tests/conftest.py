"""Shared fixtures for lrmpi's tests (exact references live in exact.py)."""
import os
import shutil
import tempfile
import time

# the operator-norm cache of the inference bounds: a fresh one per test session
# (child processes inherit it), so the norms are computed, not found
os.environ.setdefault("LRMPI_CACHE_DIR", tempfile.mkdtemp(prefix="lrmpi-norms-"))
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(20261127)


# Under `mpiexec -n N python -m pytest --with-mpi tests/mpi` the N pytest processes would
# share one temp root, and each removes the numbered folders of earlier runs beyond three
# at its start: they raced (OSError: Directory not empty, a failed rank). Each rank gets a
# base temp folder of its own instead, removed when its session passes (kept for a look
# when it fails). Here, not in tests/mpi: this file is read before pytest's own tmp_path
# factory whatever folder the command names.

_MINE = []


@pytest.hookimpl(tryfirst=True)   # before pytest's own tmp_path factory reads basetemp
def pytest_configure(config):
    if config.option.basetemp is not None or not config.getoption("with_mpi", False):
        return
    from mpi4py import MPI
    rank = MPI.COMM_WORLD.Get_rank()
    path = tempfile.mkdtemp(prefix=f"lrmpi-pytest-rank{rank}-")
    config.option.basetemp = path
    _MINE.append(path)


_STARTED = time.time()


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        for path in _MINE:
            shutil.rmtree(path, ignore_errors=True)
    # MPICH's shared-memory files of the jobs this run killed (tests/shm.py): once, by
    # the session that started the others (xdist's controller, or each mpiexec rank)
    if not hasattr(session.config, "workerinput"):
        from shm import remove_leaked
        remove_leaked(_STARTED)
