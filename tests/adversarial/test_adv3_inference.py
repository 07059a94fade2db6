"""Third adversarial pass, area 5: inference — model, data, external data and the model
cache (LRMPI_CACHE_DIR) as special files, damaged cache entries."""
import os
import stat

import numpy as np
import pytest

from adversary import assert_ok, assert_one_error, bounded, mlp_onnx, run, save
from test_adv_infer import resolutions


@pytest.fixture
def tiny(tmp_path, rng):
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    data = save(tmp_path / "d.npy", rng.standard_normal((6, 16)).astype(np.float32))
    return model, data

FAST = {"LRMPI_PROBE_TIMEOUT_S": "8"}   # a pipe blocks the HDF5 probe until this limit


# found by the third adversarial pass (fixed)
def test_model_is_a_fifo_no_hang(tmp_path, tiny):
    _, data = tiny
    fifo = tmp_path / "p.onnx"
    os.mkfifo(fifo)
    r = bounded("infer", fifo, data, "-o", tmp_path / "s.h5", env=FAST)
    assert_one_error(r, codes=(1, 2))


def test_model_dangling_link_and_data_dev_null(tmp_path, tiny):
    model, _ = tiny
    link = tmp_path / "gone.onnx"
    os.symlink(tmp_path / "nothing.onnx", link)
    _, data = tiny
    r = run("infer", link, data, "-o", tmp_path / "s.h5", timeout=60, env=FAST)
    assert_one_error(r, codes=(1, 2))
    r = run("infer", model, "/dev/null", "-o", tmp_path / "s.h5", timeout=60, env=FAST)
    assert_one_error(r, codes=(1, 2))
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("kind", ["fifo", "dangling", "devnull"])
def test_cache_dir_special(tmp_path, tiny, kind):
    """LRMPI_CACHE_DIR a pipe, a dangling link or /dev/null: the job completes (no cache)
    or one line, promptly; the special file stays what it was."""
    model, data = tiny
    if kind == "fifo":
        cache = tmp_path / "cachepipe"
        os.mkfifo(cache)
    elif kind == "dangling":
        cache = tmp_path / "cachelink"
        os.symlink(tmp_path / "no" / "where", cache)
    else:
        cache = "/dev/null"
    r = run("infer", model, data, "-o", tmp_path / "s.h5", "--planes", "2", timeout=90,
            env={"LRMPI_CACHE_DIR": str(cache)})
    assert "Traceback" not in r.stderr
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
    if kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(cache).st_mode)
    elif kind == "devnull":
        assert stat.S_ISCHR(os.stat(cache).st_mode)


def cache_files(cache):
    return [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs]


@pytest.mark.parametrize("damage", ["flip", "truncate", "fifo", "empty"])
def test_damaged_cache_entries_never_change_numbers(tmp_path, tiny, damage):
    """Every file of a filled model cache damaged (a byte flipped, truncated, replaced by a
    pipe, emptied): the next run gives bit-identical scores and bounds, or one line; no
    hang."""
    model, data = tiny
    cache = tmp_path / "cache"
    env = {"LRMPI_CACHE_DIR": str(cache)}
    ref = tmp_path / "ref.h5"
    assert_ok(run("infer", model, data, "-o", ref, "--planes", "3", "--rule", "none",
                  "--no-adaptive", env=env))
    files = cache_files(cache)
    assert files, "no cache written"
    for p in files:
        size = os.path.getsize(p)
        if damage == "flip":
            with open(p, "r+b") as f:
                f.seek(size // 2)
                c = f.read(1)
                f.seek(size // 2)
                f.write(bytes([c[0] ^ 0x40]))
        elif damage == "truncate":
            os.truncate(p, size // 3)
        elif damage == "empty":
            os.truncate(p, 0)
        else:
            os.remove(p)
            os.mkfifo(p)
    out = tmp_path / "s.h5"
    r = bounded("infer", model, data, "-o", out, "--planes", "3", "--rule", "none",
                "--no-adaptive", env=env, limit=40)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    got, want = resolutions(out), resolutions(ref)
    assert got.keys() == want.keys()
    for k in want:
        for name in ("scores", "bound"):
            assert np.array_equal(got[k][name], want[k][name]), (k, name)


def test_external_data_file_is_a_fifo(tmp_path, rng):
    """An ONNX model whose external weight file (in its folder) is a named pipe: one line,
    promptly."""
    import onnx
    src = mlp_onnx(tmp_path / "src.onnx", rng)
    m = onnx.load(src)
    d = tmp_path / "ext"
    d.mkdir()
    onnx.save_model(m, str(d / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    os.remove(d / "w.bin")
    os.mkfifo(d / "w.bin")
    data = save(tmp_path / "d.npy", rng.standard_normal((4, 16)).astype(np.float32))
    r = run("infer", d / "m.onnx", data, "-o", tmp_path / "s.h5", timeout=60, env=FAST)
    assert_one_error(r, codes=(1, 2))


def test_model_replaced_between_stop_and_resume(tmp_path, rng):
    """The model file rewritten (same graph, other weights) between a stop and --resume:
    refused with one line, the stopped checkpoint unchanged."""
    from adversary import attrs_of, stop_after
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    data = save(tmp_path / "d.npy", rng.standard_normal((64, 16)).astype(np.float32))
    out = str(tmp_path / "s.h5")
    rc, err = stop_after(out, 1, "infer", model, data, "-o", out, "--planes", "3", "--rule",
                         "none", "--no-adaptive")
    assert rc == 3, err
    before = attrs_of(out)["completed"]
    mlp_onnx(tmp_path / "m.onnx", np.random.default_rng(7))
    r = run("infer", model, data, "-o", out, "--planes", "3", "--rule", "none",
            "--no-adaptive", "--resume")
    assert_one_error(r, codes=(1, 2))
    assert attrs_of(out)["completed"] == before
