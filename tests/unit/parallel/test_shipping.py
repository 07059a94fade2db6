"""Arrays mapped from a file travel as the file's name only while the name holds the
file rank 0 mapped (parallel/shipping.py); a file replaced since travels by value."""
import os

import numpy as np

from lrmpi.numerics.buffers import mapped_file
from lrmpi.parallel import shipping


def _mapped(path, values):
    np.save(path, values)
    return np.load(path, mmap_mode="r")


def test_a_mapped_array_travels_as_its_file_and_maps_back_equal(tmp_path):
    a = _mapped(str(tmp_path / "w.npy"), np.arange(20000.0).reshape(100, 200))
    obj = {"W": a[10:60], "small": np.ones(3), "copy": np.array(a[:50])}
    sent = shipping._Pickler.dumps(obj)
    assert len(sent.arrays) == 1 and sent.arrays[0] is obj["W"]   # the view, not the copy
    got = shipping._loads(sent.head, shipping._mapped(sent.head))
    assert np.array_equal(got["W"], obj["W"]) and np.array_equal(got["copy"], obj["copy"])
    assert mapped_file(got["W"].ctypes.data) == mapped_file(a.ctypes.data)
    st = os.stat(tmp_path / "w.npy")
    assert mapped_file(a.ctypes.data) == (st.st_dev, st.st_ino)


def test_a_file_replaced_after_rank_0_mapped_it_travels_by_value(tmp_path):
    path = str(tmp_path / "w.npy")
    a = _mapped(path, np.arange(20000.0))
    tmp = str(tmp_path / "other.npy")
    np.save(tmp, -np.arange(20000.0))
    os.replace(tmp, path)                 # a new inode under the name rank 0 read
    sent = shipping._Pickler.dumps({"W": a})
    assert sent.arrays == [] and sent.head["places"] == []
    got = shipping._loads(sent.head, shipping._mapped(sent.head))
    assert np.array_equal(got["W"], np.arange(20000.0))


def test_a_file_replaced_between_rank_0_and_the_others_is_not_mapped(tmp_path):
    path = str(tmp_path / "w.npy")
    a = _mapped(path, np.arange(20000.0))
    sent = shipping._Pickler.dumps({"W": a})
    assert len(sent.arrays) == 1
    tmp = str(tmp_path / "other.npy")
    np.save(tmp, -np.arange(20000.0))
    os.replace(tmp, path)                 # after rank 0's pickle, before the others map
    assert shipping._mapped(sent.head) is None   # they receive the arrays instead
