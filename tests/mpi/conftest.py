"""Under `mpiexec -n N python -m pytest --with-mpi tests/mpi` the N pytest processes
would share one temp root, and each removes the numbered folders of earlier runs beyond
three at its start: they raced (OSError: Directory not empty, a failed rank). Each rank
gets a base temp folder of its own instead, removed when its session passes (kept
for a look when it fails)."""
import shutil
import tempfile

import pytest

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


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        for path in _MINE:
            shutil.rmtree(path, ignore_errors=True)
