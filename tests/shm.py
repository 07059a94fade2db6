"""MPICH's shared-memory files that killed jobs leave behind, removed after a test run.

MPICH makes one file per node and job under /dev/shm (mpich_shm_*) and unlinks it once
every rank has mapped it; a rank SIGKILLed before that (the crash tests kill ranks and
launchers on purpose, at random instants) leaves the file, which is RAM on tmpfs: one
full CI run left 211 of them (290 MB) and two days of runs 4.9 GB on a 24 GB machine.
"""
import glob
import os
import time


def mapped_paths():
    """Paths of the files some live process maps (/proc/*/maps)."""
    paths = set()
    for maps in glob.glob("/proc/[0-9]*/maps"):
        try:
            with open(maps) as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) == 6:
                        paths.add(parts[5].strip())
        except OSError:  # the process ended meanwhile, or is not ours to read
            continue
    return paths


def remove_leaked(since, folder="/dev/shm", pattern="mpich_shm_*", settle_s=0.5):
    """Remove the files of `pattern` in `folder` changed since `since` (a time.time())
    and at least `settle_s` ago that no live process maps: left by ranks that were
    killed. Returns the paths removed."""
    now, live, gone = time.time(), None, []
    for path in glob.glob(os.path.join(folder, pattern)):
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        if not since <= mtime <= now - settle_s:
            continue
        if live is None:
            live = mapped_paths()
        if path in live:
            continue
        try:
            os.unlink(path)
            gone.append(path)
        except OSError:
            pass
    return gone
