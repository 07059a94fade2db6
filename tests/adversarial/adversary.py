"""Helpers of the fresh adversarial pass (issue #24): the real CLI, as a user runs it.

Every case runs `python -m lrmpi` (alone or under the `mpiexec` beside this Python) in a
temporary folder with small operands, and checks what the README, `--help` and the exit-code
table promise: one `lrmpi: error` line, no traceback, the exit code, nothing lost.
"""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

PY = sys.executable


def mpiexec():
    exe = os.environ.get("MPIEXEC") or shutil.which("mpiexec", path=os.path.dirname(PY)) \
        or shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpiexec")
    return exe


def cmd(*args, n=None):
    base = [PY, "-m", "lrmpi", *map(str, args)]
    return base if n is None else [mpiexec(), "-n", str(n), *base]


def run(*args, n=None, timeout=90, env=None, cwd=None, unset=()):
    e = {**os.environ, **(env or {})}
    for k in unset:
        e.pop(k, None)
    return subprocess.run(cmd(*args, n=n), capture_output=True, text=True, timeout=timeout,
                          env=e, cwd=cwd)


def start(*args, n=None, env=None, cwd=None):
    return subprocess.Popen(cmd(*args, n=n), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})}, cwd=cwd,
                            start_new_session=True)


def kill_group(proc, sig=signal.SIGKILL):
    """Signal the job's process group; after SIGKILL also reap it and close its pipes."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    if sig == signal.SIGKILL:
        try:
            proc.communicate(timeout=30)
        except (ValueError, subprocess.TimeoutExpired):
            pass


ERROR = re.compile(r"^lrmpi( [a-z]+)?: error: ")


def error_lines(stderr):
    """The error lines (`lrmpi: error: ...`, or argparse's `lrmpi CMD: error: ...`)."""
    return [line for line in stderr.splitlines() if ERROR.match(line)]


def assert_one_error(res, code=None, codes=None, contains=(), abort_ok=False):
    """One `lrmpi: error` line (rank 0 only), no traceback, the exit code expected; no
    MPI_Abort unless `abort_ok` (a hung rank can only be ended by the launcher)."""
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out
    if not abort_ok:
        assert "MPI_Abort" not in out and "BAD TERMINATION" not in out, out
    if code is not None:
        assert res.returncode == code, (res.returncode, out)
    if codes is not None:
        assert res.returncode in codes, (res.returncode, out)
    errs = error_lines(res.stderr)
    assert len(errs) == 1, out
    for word in contains:
        assert word.lower() in errs[0].lower(), errs[0]
    return errs[0]


def assert_ok(res):
    out = res.stdout + res.stderr
    assert res.returncode == 0, (res.returncode, out)
    assert "Traceback" not in out and "lrmpi: error" not in out, out
    assert "Warning" not in res.stderr, out


def save(path, array):
    np.save(str(path), array)
    return str(path)


@pytest.fixture
def rng():
    return np.random.default_rng(24_2026)


@pytest.fixture
def ops(tmp_path, rng):
    """Small operands A (40x24), B (24x16) in tmp_path; returns (A path, B path, A, B)."""
    A = rng.standard_normal((40, 24))
    B = rng.standard_normal((24, 16))
    return save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B), A, B


@pytest.fixture
def done(tmp_path, ops):
    """A complete 3-resolution checkpoint (root writing) and its operands."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    return out, a, b, A, B


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def snapshot(root):
    """{relative path: (kind, content digest or link target)} of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", None)
            elif name == ".lock":   # lrmpi's lock: its content is the holder's pid
                out[rel] = ("file", None)
            else:
                out[rel] = ("file", digest(p))
    return out


def wait_for(path, count, proc, timeout=60):
    """Until the job file lists `count` resolutions (never a fixed sleep)."""
    import h5py
    limit = time.time() + timeout
    while time.time() < limit:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with h5py.File(path, "r") as f:
                if len(f.get("resolutions", {})) >= count:
                    return True
        except (OSError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"{path}: fewer than {count} resolutions after {timeout} s")


def load(path):
    import lrmpi
    return lrmpi.load_result(str(path))


def attrs_of(path):
    import h5py
    with h5py.File(path, "r") as f:
        return dict(f.attrs)


def exact_product(A, B):
    """max |AB| and AB in float64 via exact fractions of the float inputs (small sizes)."""
    from fractions import Fraction
    m, k = A.shape
    n = B.shape[1]
    Af = [[Fraction(float(x)) for x in row] for row in A]
    Bf = [[Fraction(float(x)) for x in row] for row in B]
    return [[sum(Af[i][t] * Bf[t][j] for t in range(k)) for j in range(n)] for i in range(m)]


def max_err(C, exact):
    from fractions import Fraction
    return max(abs(Fraction(float(C[i, j])) - exact[i][j])
               for i in range(len(exact)) for j in range(len(exact[0])))


# ---- inference models (ONNX, built with onnx.helper) ----

def mlp_onnx(path, rng, sizes=(16, 12, 4), outputs=None, softmax=False, input_shape=None,
             batch="N"):
    """A ReLU MLP; `outputs` names extra graph outputs (e.g. the hidden ReLU)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []
    prev = "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = rng.standard_normal((a, b)).astype(np.float32)
        bias = rng.standard_normal(b).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"g{i}"], name=f"gemm{i}"))
        prev = f"g{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [prev], ["prob"], axis=1, name="sm"))
        prev = "prob"
    shape = input_shape or [batch, sizes[0]]
    outs = [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [batch, sizes[-1]])]
    for name in outputs or ():
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def ort_scores(model, X):
    import onnxruntime as ort
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: X.astype(np.float32)})[0]


def rank_pid(marker, rank, timeout=60):
    """The pid of MPI rank `rank` of the job started with env ADV_MARK=marker."""
    limit = time.time() + timeout
    while time.time() < limit:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if f"ADV_MARK={marker}".encode() in env and f"PMI_RANK={rank}".encode() in env:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"rank {rank} of {marker} not found")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_asleep(pid, steady=0.8, timeout=60):
    """Until the process used no CPU for `steady` seconds and sits in clock_nanosleep
    (a worker inside a long task of the test hook, not one polling for work)."""
    limit = time.time() + timeout
    last, since = None, time.time()
    while time.time() < limit:
        with open(f"/proc/{pid}/syscall") as f:
            call = f.read().split()[0]
        ticks = cpu_ticks(pid)
        if ticks != last or call != "230":
            last, since = ticks, time.time()
        elif time.time() - since >= steady:
            return
        time.sleep(0.05)
    raise AssertionError(f"{pid} never settled into a sleep")


SLOW = {"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_ROOT_COMPUTES": "no"}


def stop_after(out, count, *args, n=2, slow="0.6", env=None, sig=signal.SIGTERM):
    """Start a job with a slow worker (rank 1 sleeps `slow` s before each task), send `sig`
    once `count` resolutions are listed; (returncode, stderr)."""
    p = start(*args, n=n, env={**SLOW, "LRMPI_TEST_SLOW_S": slow, **(env or {})})
    try:
        wait_for(out, count, p, timeout=90)
        os.killpg(p.pid, sig)
        _, err = p.communicate(timeout=60)
        return p.returncode, err
    finally:
        kill_group(p)


def swap(a, b):
    """Exchange two files' names."""
    os.rename(a, a + ".x")
    os.rename(b, a)
    os.rename(a + ".x", b)


def bounded(*args, n=None, env=None, cwd=None, limit=20):
    """run(), in a session of its own: a job still running after `limit` s (a hang) is
    killed with its whole group (probe children and MPI ranks too) and the test fails."""
    p = start(*args, n=n, env=env, cwd=cwd)
    try:
        out, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        kill_group(p)
        pytest.fail(f"still running after {limit} s (hung): lrmpi {' '.join(map(str, args))}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def job_folder(out):
    """OUT.h5.d/<job_id> of a checkpoint with one job."""
    d = str(out) + ".d"
    subs = [s for s in os.listdir(d) if os.path.isdir(os.path.join(d, s))]
    assert len(subs) == 1, subs
    return os.path.join(d, subs[0])


def load_in_child(out):
    """load_result in a child (a hostile file may crash HDF5): (returncode, C or None, stderr)."""
    code = ("import sys, numpy as np, lrmpi\n"
            "try:\n"
            "    C, a = lrmpi.load_result(sys.argv[1])\n"
            "except lrmpi.LrmpiError as e:\n"
            "    print('ERR', e, file=sys.stderr); sys.exit(1)\n"
            "np.save(sys.argv[1] + '.loaded.npy', C)\n")
    r = subprocess.run([PY, "-c", code, str(out)], capture_output=True, text=True, timeout=60)
    C = np.load(str(out) + ".loaded.npy") if r.returncode == 0 else None
    return r.returncode, C, r.stderr


def kill_rank_after_first(p, out, marker, rank):
    """SIGKILL rank `rank` of job `p` (started with ADV_MARK=marker) once resolution 1 of
    `out` is listed; the job must then end non-zero."""
    try:
        wait_for(out, 1, p)
        os.kill(rank_pid(marker, rank), signal.SIGKILL)
        p.communicate(timeout=60)
        assert p.returncode != 0
    finally:
        kill_group(p)


# ---- fourth pass: permissions as a user without root's override, file systems that fill ----

NOCAP = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


def run_nocap(*args, n=None, timeout=90, env=None, cwd=None):
    """run() without the capabilities that let root read and write past file modes (the
    tests run as root: a mode-000 file is unreadable only to a process without them)."""
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv")
    return subprocess.run([*NOCAP, *cmd(*args, n=n)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


def mount_tmpfs(path, size):
    """A tmpfs of `size` (e.g. "900k") at path (skips where mounting is not allowed)."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")


def umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def leftovers(root):
    """Temporary files (`*.tmp.*`) anywhere under root."""
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if ".tmp." in f]
