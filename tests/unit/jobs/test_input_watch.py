"""InputWatch: a running job's input files changed in place fail it before the next
resolution is recorded; a touch does not (its fingerprint is the same)."""
import os

import numpy as np
import pytest

from lrmpi.errors import InputError
from lrmpi.jobs.job import Fingerprint, InputWatch


def test_a_change_in_place_fails_a_touch_does_not(tmp_path):
    A = np.arange(12.0).reshape(3, 4)
    path = str(tmp_path / "A.npy")
    np.save(path, A)
    mapped = np.load(path, mmap_mode="r")          # what the job reads
    fp = Fingerprint(mapped)
    fp()                                           # recorded at the start
    watch = InputWatch([path, np.zeros(2)], fp)    # arrays are no files: not watched
    watch.check()
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # ctime moves only
    watch.check()
    with open(path, "r+b") as f:                   # the same inode, other bytes
        f.seek(-8, os.SEEK_END)
        f.write(np.float64(99.0).tobytes())
    with pytest.raises(InputError, match="A.npy was changed in place while the job ran"):
        watch.check()
