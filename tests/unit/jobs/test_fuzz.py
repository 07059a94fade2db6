"""Fuzzing the input loaders and the checkpoint reader (hypothesis, bounded in CI).

Any input file must give either a value or a clean lrmpi error (InputError /
CheckpointError) — never another exception. LRMPI_FUZZ_EXAMPLES raises the
count for longer local runs.
"""
import contextlib
import io
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrmpi.errors import LrmpiError
from lrmpi.jobs import inputs
from lrmpi.jobs.checkpoint import Checkpoint

EXAMPLES = int(os.environ.get("LRMPI_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _valid_npy():
    buf = io.BytesIO()
    np.save(buf, np.arange(24, dtype=np.float64).reshape(4, 6))
    return buf.getvalue()


def _valid_checkpoint(d):
    from lrmpi.jobs.matmul import run_matmul
    out = os.path.join(d, "c.h5")
    run_matmul(np.eye(4), np.ones((4, 3)), out, planes=2)
    with open(out, "rb") as f:
        return out, f.read()


def mutate(data, edits):
    b = bytearray(data)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)


def _write(d, name, data):
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


@SETTINGS
@given(st.binary(max_size=400) | st.builds(mutate, st.just(_valid_npy()), edits)
       | st.builds(lambda n: _valid_npy()[:n], st.integers(0, 300)))
def test_npy_loader_never_crashes(data):
    with tempfile.TemporaryDirectory() as d:
        try:
            out = inputs.load(_write(d, "a.npy", data), "A")
            assert isinstance(out, np.ndarray)
        except LrmpiError:
            pass


@contextlib.contextmanager
def _short_probe():
    """Damaged HDF5 files can also send the library into an endless loop: readers
    of untrusted files probe them in a child process (checkpoint.probe), here
    with a short timeout."""
    from lrmpi import config
    with config.configure(probe_timeout_s=5):
        yield


@settings(SETTINGS, max_examples=min(EXAMPLES, 40))  # a probe (child process) each
@given(edits, st.integers(0, 4000), st.booleans())
def test_checkpoint_reader_never_crashes(ed, cut, truncate):
    with tempfile.TemporaryDirectory() as d, _short_probe():
        out, data = _valid_checkpoint(d)
        data = data[:cut] if truncate else mutate(data, ed)
        _write(d, "c.h5", data)
        try:
            ck = Checkpoint(out, safe=True)
            for i in ck.resolution_indices():
                ck.resolution(i)
            if ck.attrs.get("completed"):
                ck.sums(ck.attrs["completed"], (4, 3), safe=True)
        except LrmpiError:
            pass


@settings(SETTINGS, max_examples=min(EXAMPLES, 40))
@given(edits, st.integers(0, 4000), st.booleans())
def test_resume_data_reader_never_crashes(tmp_path_factory, ed, cut, truncate):
    # one valid checkpoint for every example; each damages a copy of its resume data
    import shutil

    from lrmpi.jobs.checkpoint import schema
    base = tmp_path_factory.getbasetemp() / "fuzz-sums"
    if not base.exists():
        base.mkdir()
        _valid_checkpoint(str(base))
    with tempfile.TemporaryDirectory() as d, _short_probe():
        shutil.copytree(base, d, dirs_exist_ok=True)
        out = os.path.join(d, "c.h5")
        path = schema.sums_file(out, Checkpoint(out).job_id, 2)  # 1's is its C
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:cut] if truncate else mutate(data, ed))
        try:
            for level, S in Checkpoint(out).sums(2, (4, 3), safe=True):
                assert S.shape == (4, 3) and S.dtype in (np.int32, np.int64)
        except LrmpiError:
            pass


@SETTINGS
@given(edits, st.integers(0, 2000), st.booleans())
def test_h5_operand_loader_never_crashes(ed, cut, truncate):
    import h5py
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "a.h5")
        with h5py.File(path, "w") as f:
            f["A"] = np.ones((5, 5))
        with open(path, "rb") as f:
            data = f.read()
        _write(d, "a.h5", data[:cut] if truncate else mutate(data, ed))
        try:
            inputs.load(path + ":/A", "A")
        except LrmpiError:
            pass


@SETTINGS
@given(edits, st.integers(0, 3000), st.booleans())
def test_model_loaders_never_crash(ed, cut, truncate):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from lrmpi.nn import graph as G
    from lrmpi.nn.onnx_import import load_model
    W = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    g = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["z"], transB=1),
                           helper.make_node("Softmax", ["z"], ["y"], axis=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
                          [W])
    onnx_bytes = helper.make_model(g).SerializeToString()
    with tempfile.TemporaryDirectory() as d:
        G.save(G.sequential([("linear", {"W": np.ones((3, 4)), "b": np.zeros(3)}),
                             ("relu", {})], (4,)), os.path.join(d, "m.npz"))
        with open(os.path.join(d, "m.npz"), "rb") as f:
            npz_bytes = f.read()
        for name, data in (("m.onnx", onnx_bytes), ("m.npz", npz_bytes)):
            path = _write(d, name, data[:cut] if truncate else mutate(data, ed))
            try:
                load_model(path)
            except LrmpiError:
                pass


def test_a_crash_of_the_hdf5_library_is_a_clean_error(tmp_path, monkeypatch):
    """Fuzzing (LRMPI_FUZZ_EXAMPLES=1500) found damaged files on which HDF5 itself
    segfaults; Checkpoint(safe=True) reads them in a child first. Simulated here."""
    from lrmpi.errors import CheckpointError
    from lrmpi.jobs.checkpoint import probe, reader  # probe: the module
    path = tmp_path / "c.h5"
    path.write_bytes(b"x")
    monkeypatch.setattr(probe, "_PROBE", "import os, signal; os.kill(os.getpid(), "
                                              "signal.SIGSEGV)")
    with pytest.raises(CheckpointError, match="HDF5 library crashed reading it: SIGSEGV"):
        reader.Checkpoint(str(path), safe=True)
