"""A matmul worker answers SEAL after its own error too (`--write ranks`): the files of
the resolutions it wrote whole are committed, so a full disk at resolution r + 1 does
not lose resolution r, which the root was sealing when the error came."""
import os

import numpy as np
import pytest

from lrmpi.jobs.checkpoint import rank_files
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.parallel import protocol
from lrmpi.parallel.messages import Seal
from lrmpi.parallel.partition import Tiling
from lrmpi.parallel.worker import MatmulWorker

JOB = "0123456789abcdef"


class Comm:
    def Get_rank(self):
        return 1

    def Get_size(self):
        return 3


@pytest.fixture
def worker(tmp_path, monkeypatch):
    out = str(tmp_path / "c.h5")
    os.makedirs(S.job_dir(out, JOB), exist_ok=True)
    files = rank_files.RankFiles((out, JOB, False), 1)
    tile = Tiling(4, 3, 1, 1).tiles()[0]
    files.put(0, tile, np.arange(12.0).reshape(4, 3))
    w = MatmulWorker(Comm())
    w.owned = type("Owned", (), {"files": files})()
    answers = []
    monkeypatch.setattr(protocol, "send_sealed",
                        lambda comm, res, name, tiles: answers.append((res, name, tiles)))
    return w, files, answers, out


def test_seal_after_the_workers_own_error_commits_what_it_wrote(worker):
    w, files, answers, out = worker
    assert w.handle(Seal(0), failed=True) == 0
    assert answers == [(0, S.rank_name(1, 1), [0])]
    assert os.path.exists(os.path.join(S.job_dir(out, JOB), S.rank_name(1, 1)))


def test_a_seal_that_fails_answers_could_not_and_reports_once(worker, monkeypatch):
    w, files, answers, _ = worker

    def full(res):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files, "seal", full)
    assert w.handle(Seal(0), failed=True) == 0   # already failed: its first error stands
    with pytest.raises(OSError):
        w.handle(Seal(0), failed=False)          # the first error: reported by serve()
    assert answers == [(0, None, None), (0, None, None)]
