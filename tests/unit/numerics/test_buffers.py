"""numerics.buffers: memory given back while arrays stay valid."""
import os

import numpy as np
import pytest

from lrmpi.numerics.buffers import big_empty, drop_pages, huge_pages, release


def _rss_kib(field="VmRSS"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


def test_release_returns_memory_and_reads_zeros():
    a = big_empty((64, 1 << 20), np.int8)  # 64 MiB in a mapping of its own
    a.fill(7)
    before = _rss_kib()
    release(a)
    after = _rss_kib()
    assert before - after >= 48 * 1024  # most of the 64 MiB left this process
    assert a.shape == (64, 1 << 20) and not a[::7, ::4099].any()
    a[3, 5] = 1  # still writable memory
    assert a[3, 5] == 1


def test_release_leaves_other_arrays_alone(tmp_path):
    small = np.full(1000, 3, np.int16)  # numpy's own memory
    release(small)
    assert (small == 3).all()
    path = tmp_path / "x.npy"
    np.save(path, np.arange(1 << 20, dtype=np.float64))
    mapped = np.load(path, mmap_mode="r")  # a file's pages: never dropped to zeros
    release(mapped)
    assert mapped[-1] == (1 << 20) - 1


def test_drop_pages_keeps_mapped_values(tmp_path):
    path = tmp_path / "x.npy"
    X = np.arange(512 * 1024, dtype=np.float64).reshape(512, 1024)
    np.save(path, X)
    M = np.load(path, mmap_mode="r")
    assert M.sum() == X.sum()
    drop_pages(M, 0, 300)
    drop_pages(M)
    np.testing.assert_array_equal(M, X)


def test_touch_finds_a_big_buffer_s_own_mapping():
    """touch() faults a big_empty buffer in with madvise on its mapping, found
    through np.frombuffer's memoryview (it once fell back to a write per page)."""
    import mmap
    from lrmpi.numerics.buffers import _mapping, big_empty, touch
    a = big_empty((3, 1 << 21), np.int8)
    assert isinstance(_mapping(a), mmap.mmap) and isinstance(_mapping(a[1:, 5:]), mmap.mmap)
    assert _mapping(np.empty(10)) is None
    touch(a)
    assert not a.any()  # fresh anonymous memory reads zeros, touched or not


def test_touch_faults_the_buffer_in_and_not_its_mapping_s_slack():
    """A big_empty buffer's mapping has up to 2 MB of alignment slack: touch()
    populates the array's own pages (each buffer of the fused layers' pool once
    cost 2 MB more resident memory)."""
    from lrmpi.numerics.buffers import HUGE, big_empty, huge_pages, touch
    before = huge_pages(False)    # 4 KiB pages: RSS counts what was faulted
    try:
        a = big_empty((48 << 20,), np.uint8)
        rss = _rss_kib("RssAnon")
        touch(a)
        grown = _rss_kib("RssAnon") - rss
    finally:
        huge_pages(before)
    assert 48 << 10 <= grown < (48 << 10) + HUGE // 1024 // 4


def test_drop_pages_lets_sampled_rows_leave_whatever_the_kernel_mapped(tmp_path):
    """Rows read one by one from a mapped operand (the fallback's sample of B):
    the kernel may map a large folio (up to 2 MB) around each read, so each drop
    covers the HUGE-aligned range around its rows (measured before: 64 rows of a
    128 MB operand left 121 MB mapped)."""
    path = tmp_path / "B.npy"
    np.save(path, np.random.default_rng(0).standard_normal((2048, 4096)))  # 64 MiB
    import os
    fd = os.open(path, os.O_RDONLY)
    try:  # out of the page cache: read back through readahead, as a job reads its inputs
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    B = np.load(path, mmap_mode="r")
    before = _rss_kib("RssFile")
    rows = np.arange(0, 2048, 32)
    got = np.empty((len(rows), 4096))
    for i, t in enumerate(rows):
        np.abs(B[t], out=got[i])
        drop_pages(B, t, t + 1)
    assert _rss_kib("RssFile") - before < 8 * 1024  # not the 64 MiB a folio per row maps
    np.testing.assert_array_equal(got, np.abs(np.load(path)[rows]))


def test_drop_pages_leaves_a_copy_on_write_mapping_alone(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((256, 1024)))
    M = np.load(path, mmap_mode="c")  # private: what is written lives in this process only
    M[100, 5] = 7.0
    drop_pages(M)   # would read the file's 0 again if the page were dropped
    drop_pages(M, 99, 101)
    assert M[100, 5] == 7.0


def _vm_flags(a):
    """The VmFlags of the mapping that holds array a (/proc/self/smaps)."""
    address, flags, inside = a.ctypes.data, None, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                flags = line.split()[1:]
    return flags


@pytest.mark.skipif(not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"),
                    reason="no transparent huge pages (Linux with THP)")
def test_huge_pages_are_asked_for_unless_turned_off():
    """A matmul worker's buffers use 4 KiB pages (huge_pages(False)): asking for huge
    pages is an madvise, seen in the mapping's VmFlags as 'hg'."""
    a = big_empty((4 << 20,), np.uint8)
    if _vm_flags(a) is None:
        pytest.skip("this kernel's smaps has no VmFlags")
    assert "hg" in _vm_flags(a)
    try:
        assert huge_pages(False) is True  # the setting before
        b = big_empty((4 << 20,), np.uint8)
        assert _vm_flags(b) is not None and "hg" not in _vm_flags(b)
        b[::4096] = 1  # usable all the same
        assert int(b.sum()) == len(b) // 4096
    finally:
        huge_pages(True)
    assert "hg" in _vm_flags(big_empty((4 << 20,), np.uint8))


def test_release_of_a_part_leaves_the_rest():
    """A plane of A once no resolution multiplies it: its pages go, the others stay."""
    a = big_empty((4, 1 << 22), np.int8)  # 4 planes of 4 MiB
    a.fill(5)
    before = _rss_kib()
    release(a[1])
    assert before - _rss_kib() >= 3 * 1024
    assert not a[1].any() and (a[0] == 5).all() and (a[2:] == 5).all()
    b = big_empty((3, 1 << 21), np.int8)[:, 7:]  # not contiguous: nothing released
    b.fill(2)
    release(b)
    assert (b == 2).all()


def test_a_matmul_job_asks_for_no_huge_pages_on_any_rank(tmp_path, monkeypatch):
    """Every big buffer of a matmul job (here the root, in one process) is made without
    the huge-page advice, and the setting is back once the job returns."""
    from lrmpi.jobs.matmul import run_matmul
    from lrmpi.numerics import buffers
    asked = []
    real = buffers.big_empty

    def spy(shape, dtype, at=0):
        asked.append(buffers._HUGE_PAGES[0])
        return real(shape, dtype, at)
    monkeypatch.setattr(buffers, "big_empty", spy)
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((600, 500)), rng.standard_normal((500, 700))
    assert run_matmul(A, B, str(tmp_path / "c.h5"), planes=2).status == "complete"
    assert asked and not any(asked)
    assert buffers._HUGE_PAGES[0] is True
