"""Launching the real CLI, through mpiexec or alone, and finding its ranks."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest


def mpiexec():
    """The launcher: $MPIEXEC, else the one installed beside this Python (the mpich wheel)."""
    exe = os.environ.get("MPIEXEC") or shutil.which("mpiexec", path=os.path.dirname(sys.executable)) \
        or shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpiexec found (pip install 'lrmpi[mpi]' or set MPIEXEC)")
    return exe


def lrmpi_cmd(*args, n=None):
    base = [sys.executable, "-m", "lrmpi", *map(str, args)]
    return base if n is None else [mpiexec(), "-n", str(n), *base]


def run(*args, n=None, timeout=120, env=None):
    return subprocess.run(lrmpi_cmd(*args, n=n), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def start(*args, n=None, env=None):
    return subprocess.Popen(lrmpi_cmd(*args, n=n), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def wait_for_file(path, proc, ready, what, timeout=60):
    """Poll the checkpoint until `ready(h5py file)` is true."""
    import h5py
    limit = time.time() + timeout
    while time.time() < limit:
        if proc.poll() is not None:
            raise AssertionError(f"job ended early: {finish(proc, 5)}")
        try:
            with h5py.File(path, "r") as f:
                if ready(f):
                    return
        except (OSError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path}: {what} after {timeout} s")


def wait_for_resolutions(path, count, proc, timeout=60):
    """Poll the checkpoint until it lists `count` resolutions."""
    wait_for_file(path, proc, lambda f: len(f.get("resolutions", {})) >= count,
                  f"fewer than {count} resolutions", timeout)


def finish(proc, timeout):
    """(returncode, stderr) once the job ends by itself within `timeout` seconds."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def descendants(root):
    """PIDs of `root` and all its descendants (Hydra puts its proxy and every rank
    in sessions of their own, so process groups and sessions do not find them)."""
    children = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(pid))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rank_pid(proc, rank):
    """PID of MPI rank `rank` started by launcher `proc` (from its PMI_RANK)."""
    for pid in descendants(proc.pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env:
            return pid
    raise AssertionError(f"rank {rank} not found")


def kill_tree(proc):
    """SIGKILL the launcher and every rank it started, and close its pipes."""
    for pid in descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
