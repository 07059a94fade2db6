"""run_infer in one process: checkpoint, stop by signal, resume, refusal."""
import os
import signal

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("sklearn")

from lrmpi.errors import CheckpointError  # noqa: E402
from lrmpi.experiments import digits  # noqa: E402
from lrmpi.jobs.checkpoint import Checkpoint  # noqa: E402
from lrmpi.jobs.inference import run_infer  # noqa: E402


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    X, y = digits.cnn_onnx(d / "cnn.onnx")
    np.save(d / "x.npy", X)
    return str(d / "cnn.onnx"), str(d / "x.npy"), X


def test_signal_stops_after_a_resolution_and_resume_finishes_identically(cnn, tmp_path):
    model, data, X = cnn
    full = run_infer(model, data, str(tmp_path / "full.h5"), planes=4)
    assert full.status == "complete"

    def stop_at_2(meta, *_):
        if meta["index"] == 2:
            os.kill(os.getpid(), signal.SIGUSR1)

    out = str(tmp_path / "c.h5")
    part = run_infer(model, data, out, planes=4, on_resolution=stop_at_2)
    assert part.status == "deadline" and part.completed == 2
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "deadline" and ck.attrs["completed"] == 2
    seen = []
    done = run_infer(model, data, out, planes=4, resume=True,
                     on_resolution=lambda m, *_: seen.append(m["index"]))
    assert done.status == "complete" and seen == [3, 4]  # 1 and 2 not recomputed
    a, b = Checkpoint(out), Checkpoint(str(tmp_path / "full.h5"))
    for i in range(1, 5):
        for key in ("scores", "predicted", "refined"):
            np.testing.assert_array_equal(a.resolution(i)[1][key], b.resolution(i)[1][key])


def test_resume_refuses_other_data(cnn, tmp_path):
    model, data, X = cnn
    out = str(tmp_path / "c.h5")
    run_infer(model, data, out, planes=2)
    with pytest.raises(CheckpointError, match="the inputs differ"):
        run_infer(model, X * 0.5, out, planes=2, resume=True)
    with pytest.raises(CheckpointError, match="planes=2, this run has planes=3"):
        run_infer(model, data, out, planes=3, resume=True)


def test_a_last_resolution_that_cannot_be_written_marks_the_job_failed(cnn, tmp_path,
                                                                       monkeypatch):
    """The last resolution's state file fails on the writer's thread (a full disk): the
    error surfaces in the final status mark, and the job file says failed (it stayed
    `running`, and the workers were never told), with the resolutions before it."""
    import errno
    from lrmpi.jobs.checkpoint import resume_data
    model, data, X = cnn
    real = resume_data.write_state

    def full_at_4(f, index, *args, **kwargs):
        if index == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, index, *args, **kwargs)

    monkeypatch.setattr(resume_data, "write_state", full_at_4)
    out = str(tmp_path / "c.h5")
    with pytest.raises(CheckpointError, match="No space left"):
        run_infer(model, data, out, planes=4, rule="none")
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "failed" and ck.attrs["completed"] == 3
