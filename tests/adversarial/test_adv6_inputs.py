"""Sixth adversarial pass, area 4: inputs that change between a stopped inference run and
its `--resume` — the data rewritten (other values, one more sample, an HDF5 dataset edited
in place, the same values in a new file), the model's weights changed by one ulp with its
modification time put back. The README: `--resume` "refuses a checkpoint whose inputs
(fingerprint) or options differ"; a resume is bit-identical to an uninterrupted run."""
import os

import h5py
import numpy as np
import pytest

from adversary import assert_ok, assert_one_error, digest, save, stop_after
from adversary6 import TINY_ARGS, assert_same, infer


def _stopped(tmp_path, model, data, cache):
    out = str(tmp_path / "s.h5")
    rc, err = stop_after(out, 1, "infer", model, data, "-o", out, *TINY_ARGS, n=2,
                         env={"LRMPI_CACHE_DIR": str(cache)})
    assert rc == 3, err
    return out


def _files(out):
    """{path: digest} of the job file and every file of its folder (the lock aside)."""
    files = {p: digest(p) for p in [out] + [os.path.join(d, f) for d, _, fs in
                                            os.walk(out + ".d") for f in fs if f != ".lock"]}
    return files


@pytest.mark.parametrize("change", ["values", "one_more_sample", "one_ulp"])
def test_data_changed_between_stop_and_resume_refused(tmp_path, tiny, change):
    """The data file rewritten between the stop and `--resume` (other values; one more
    sample; one value moved by one ulp): one line, exit 1 or 2, the checkpoint's files
    unchanged."""
    m1, _, data, _ = tiny
    cache = tmp_path / "cache"
    out = _stopped(tmp_path, m1, data, cache)
    X = np.load(data)
    if change == "values":
        X = X[::-1].copy()
    elif change == "one_more_sample":
        X = np.concatenate([X, X[:1]])
    else:
        X[2, 3] = np.nextafter(X[2, 3], np.float32(np.inf))
    st = os.stat(data)
    save(data, X)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = _files(out)
    r = infer(m1, data, out, "--resume", cache=cache)
    assert_one_error(r, codes=(1, 2))
    assert _files(out) == before


def test_h5_data_edited_in_place_between_stop_and_resume_refused(tmp_path, tiny):
    """Data as `FILE.h5:/x`, one value of the dataset edited in place (same file, same
    size) between the stop and `--resume`: one line."""
    m1, _, data, _ = tiny
    h5 = tmp_path / "data.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = np.load(data)
    spec = f"{h5}:/x"
    cache = tmp_path / "cache"
    out = _stopped(tmp_path, m1, spec, cache)
    with h5py.File(h5, "r+") as f:
        f["x"][0, 0] = f["x"][0, 0] + 1
    r = infer(m1, spec, out, "--resume", cache=cache)
    assert_one_error(r, codes=(1, 2))


def test_model_weight_one_ulp_with_mtime_restored_refused(tmp_path, tiny):
    """One weight of the model moved by one ulp (same size, modification time put back)
    between the stop and `--resume` with a warm cache: one line, never a mix of two
    models."""
    import onnx
    from onnx import numpy_helper
    m1, _, data, _ = tiny
    cache = tmp_path / "cache"
    out = _stopped(tmp_path, m1, data, cache)
    st = os.stat(m1)
    m = onnx.load(m1)
    t = m.graph.initializer[0]
    W = numpy_helper.to_array(t).copy()
    W.flat[0] = np.nextafter(W.flat[0], np.float32(np.inf))
    t.CopyFrom(numpy_helper.from_array(W, t.name))
    onnx.save(m, m1)
    assert os.path.getsize(m1) == st.st_size
    os.utime(m1, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = infer(m1, data, out, "--resume", cache=cache)
    assert_one_error(r, codes=(1, 2))


def test_same_data_in_a_new_file_resumes_bit_identical(tmp_path, tiny):
    """The data written again with the same values (a new inode, a new time) between the
    stop and `--resume`: the resume completes, bit-identical to an uninterrupted run."""
    m1, _, data, ref1 = tiny
    cache = tmp_path / "cache"
    out = _stopped(tmp_path, m1, data, cache)
    X = np.load(data)
    os.remove(data)
    save(data, X)
    assert_ok(infer(m1, data, out, "--resume", cache=cache))
    assert_same(out, ref1)


def test_model_rewritten_with_same_weights_resumes_or_refuses(tmp_path, tiny):
    """The model saved again with the same weights and a new `doc_string` (other bytes,
    same graph): the resume completes bit-identical to an uninterrupted run, or is
    refused in one line; never a mix."""
    import onnx
    m1, _, data, ref1 = tiny
    cache = tmp_path / "cache"
    out = _stopped(tmp_path, m1, data, cache)
    m = onnx.load(m1)
    m.doc_string = "saved again"
    onnx.save(m, m1)
    r = infer(m1, data, out, "--resume", cache=cache)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    assert_ok(r)
    assert_same(out, ref1)
