"""Helpers of the ninth adversarial pass. Built on adversary.py's (the real CLI, alone or
under the `mpiexec` beside this Python); these add MPMD launches (a setting that differs
between ranks), bit-for-bit comparison of whole checkpoints, and a fake `srun`/`scontrol`
so the generated SLURM scripts run under plain bash."""
import os
import stat
import subprocess

import h5py
import numpy as np

from adversary import PY, mpiexec


def mpmd(args, envs, timeout=90, cwd=None):
    """`mpiexec -n 1 env E0 lrmpi ARGS : -n 1 env E1 lrmpi ARGS : ...`, one block per
    environment dict in `envs` (rank order)."""
    argv = [mpiexec()]
    for i, e in enumerate(envs):
        if i:
            argv.append(":")
        argv += ["-n", "1", "env", *[f"{k}={v}" for k, v in e.items()],
                 PY, "-m", "lrmpi", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def datasets(out):
    """{resolution: {dataset: array}} of a checkpoint (either kind), through plain h5py."""
    with h5py.File(str(out), "r") as f:
        return {k: {d: f["resolutions"][k][d][()] for d in f["resolutions"][k]}
                for k in f["resolutions"]}


def same_results(a, b):
    """Two checkpoints list the same resolutions with the same arrays, bit for bit."""
    x, y = datasets(a), datasets(b)
    if x.keys() != y.keys():
        return False
    return all(np.array_equal(x[k][d], y[k][d], equal_nan=True) for k in x for d in x[k])


def fake_slurm(folder, srun_body='shift; exec "$@"'):
    """A bin folder with `srun` (drops its --mpi option, runs the rest, or `srun_body`),
    `scontrol` (records its arguments in folder/scontrol.log) and a `squeue` that knows no
    job; returns the folder (prepend it to PATH)."""
    os.makedirs(folder, exist_ok=True)
    scripts = {
        "srun": f"#!/bin/bash\n{srun_body}\n",
        "scontrol": f"#!/bin/bash\necho \"$@\" >> {folder}/scontrol.log\n",
        "squeue": "#!/bin/bash\nexit 1\n",
    }
    for name, body in scripts.items():
        p = os.path.join(folder, name)
        with open(p, "w") as f:
            f.write(body)
        os.chmod(p, os.stat(p).st_mode | stat.S_IXUSR)
    return str(folder)


def run_script(script, fakebin, env=None, cwd=None, timeout=120):
    """bash SCRIPT with the fake SLURM tools first on PATH (and the given variables)."""
    e = {**os.environ, "PATH": f"{fakebin}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(["bash", str(script)], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=cwd)


def wait_completed(path, count, proc, timeout=60):
    """Until the job file's `completed` reaches `count` (with --keep latest the job file
    lists one resolution only); False if the job ended first."""
    import time
    limit = time.time() + timeout
    while time.time() < limit:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with h5py.File(str(path), "r") as f:
                if int(f.attrs.get("completed", 0)) >= count:
                    return True
        except (OSError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"{path}: completed < {count} after {timeout} s")


def stop_at(out, count, *args, n=2, slow="0.5", env=None, sig=None, after=0.0):
    """adversary.stop_after, waiting on `completed` (so --keep latest works too)."""
    import signal as _s
    import time
    from adversary import SLOW, kill_group, start
    p = start(*args, n=n, env={**SLOW, "LRMPI_TEST_SLOW_S": slow, **(env or {})})
    try:
        assert wait_completed(out, count, p, timeout=90), p.communicate()[1]
        time.sleep(after)
        os.killpg(p.pid, sig or _s.SIGTERM)
        _, err = p.communicate(timeout=60)
        return p.returncode, err
    finally:
        kill_group(p)


def marked_pids(marker):
    """Pids of processes whose environment holds ADV_MARK=marker (MPI ranks live in
    process groups of their own: killing the launcher's group leaves them)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"ADV_MARK={marker}".encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def mpmd_bounded(blocks, marker, limit=20):
    """An MPMD launch, blocks = [(env dict, lrmpi args)], each one rank; killed (launcher
    and every marked rank) after `limit` s. (returncode or None if it hung, stdout+stderr)."""
    import signal as _s
    argv = [mpiexec()]
    for i, (e, args) in enumerate(blocks):
        if i:
            argv.append(":")
        argv += ["-n", "1", "env", f"ADV_MARK={marker}", *[f"{k}={v}" for k, v in e.items()],
                 PY, "-m", "lrmpi", *map(str, args)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=limit)
        return p.returncode, out + err
    except subprocess.TimeoutExpired:
        return None, ""
    finally:
        for pid in marked_pids(marker):
            try:
                os.kill(pid, _s.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(p.pid, _s.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate()
