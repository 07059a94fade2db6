"""tests/shm.py: only the leaked shared-memory files of this run go."""
import mmap
import os
import time

from shm import remove_leaked


def test_only_unmapped_files_of_this_run_are_removed(tmp_path):
    since = time.time() - 100
    old = tmp_path / "mpich_shm_old"
    old.write_bytes(b"x" * 4096)
    os.utime(old, (since - 50, since - 50))        # before the run: not ours
    leaked = tmp_path / "mpich_shm_leaked"
    leaked.write_bytes(b"x" * 4096)
    os.utime(leaked, (since + 10, since + 10))     # this run's, mapped by no one
    live = tmp_path / "mpich_shm_live"
    live.write_bytes(b"x" * 4096)
    os.utime(live, (since + 10, since + 10))       # this run's, still mapped
    fresh = tmp_path / "mpich_shm_fresh"
    fresh.write_bytes(b"x" * 4096)                 # just made: a job may be starting
    other = tmp_path / "vader_segment.1"
    other.write_bytes(b"x")
    os.utime(other, (since + 10, since + 10))      # another pattern
    with open(live, "r+b") as f:
        m = mmap.mmap(f.fileno(), 4096)
        try:
            gone = remove_leaked(since, str(tmp_path))
        finally:
            m.close()
    assert gone == [str(leaked)]
    assert old.exists() and live.exists() and fresh.exists() and other.exists()
    assert not leaked.exists()
