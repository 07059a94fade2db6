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
    """Poll the checkpoint until `count` resolutions are finished (listed, or counted
    in `completed`: with --keep latest it lists only the last)."""
    wait_for_file(path, proc, lambda f: max(len(f.get("resolutions", {})),
                                            int(f.attrs.get("completed", 0))) >= count,
                  f"fewer than {count} resolutions", timeout)


def since_start(out):
    """Seconds since the job in `out` started (its started_at: after the launch and the
    imports, which a loaded machine slows down and which are not the job's promise)."""
    from lrmpi.jobs.checkpoint import Checkpoint
    return time.time() - float(Checkpoint(out).attrs["started_at"])


def random_instant(proc, out, rnd, planned, timeout=120):
    """Wait for a random point of the job's life chosen by its progress, not by the
    clock (a loaded machine stretches start-up past any fixed window): one time in ten
    a random instant of start-up (k = -1), else the job file listing k resolutions (0:
    it exists, the job started; k from 0..planned-1, early ones likelier: a trial runs
    until then) and then up to 0.2 s more, so that kills land before, between and
    during the writing of resolutions."""
    k = -1 if rnd.random() < 0.1 else int(planned * rnd.random() ** 2)
    if k < 0:
        time.sleep(rnd.uniform(0.0, 1.0))
        return k
    limit = time.time() + timeout
    while not os.path.exists(out):
        if proc.poll() is not None:
            raise AssertionError(f"job ended early: {finish(proc, 5)}")
        if time.time() > limit:
            raise AssertionError(f"{out} not created after {timeout} s")
        time.sleep(0.02)
    if k > 0:
        wait_for_resolutions(out, k, proc, timeout)
    time.sleep(rnd.uniform(0.0, 0.2))
    return k


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


def alive(pids):
    """Those of `pids` still running (a dead process its parent has not reaped yet, a
    zombie, is not: Open MPI's ranks are reaped by init once mpiexec is gone)."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(pid)
        except (OSError, IndexError):
            pass
    return out


def rank_pid(proc, rank):
    """PID of MPI rank `rank` started by launcher `proc` (from its PMI_RANK: Hydra, or
    OMPI_COMM_WORLD_RANK: Open MPI's mpirun)."""
    want = {f"PMI_RANK={rank}".encode(), f"OMPI_COMM_WORLD_RANK={rank}".encode()}
    for pid in descendants(proc.pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if want.intersection(env) and b"python" in _cmdline(pid):
            return pid
    raise AssertionError(f"rank {rank} not found")


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def open_mpi():
    """Whether the launcher is Open MPI's mpirun (signals and exit codes differ: README,
    "Open MPI")."""
    p = subprocess.run([mpiexec(), "--version"], capture_output=True, text=True, timeout=30)
    return "Open MPI" in p.stdout or "OpenRTE" in p.stdout


def kill_tree(proc):
    """SIGKILL the launcher and every rank it started, and close its pipes."""
    for pid in descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
