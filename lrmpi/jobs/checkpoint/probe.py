"""Opening HDF5 files we did not write (or that may be damaged) in a child process first.

Fuzzing found damaged HDF5 files on which the HDF5 library itself segfaults or loops
forever; that must end as a clean error here, not as a dead (or hung) MPI job. The
child reads every object's metadata (attributes, shapes, virtual sources: what can
crash the library), not the data. For a checkpoint it also reads every file lrmpi
wrote in the job's folder: one child process for all of them.
"""
import signal
import subprocess
import sys

import h5py

from lrmpi import config
from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import schema as S

_PROBE = r"""
import os, re, sys, h5py

def visit(f):  # every object reached by hard links (external links are not followed)
    dict(f.attrs)
    def one(name, obj):
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset):
            obj.shape, obj.dtype
            if obj.is_virtual:
                obj.virtual_sources()
    f.visititems(one)

path, folder_of_job = sys.argv[1], sys.argv[2] == "1"
with h5py.File(path, "r") as f:
    visit(f)
    job = f.attrs.get(sys.argv[5])
if folder_of_job and isinstance(job, (str, bytes)):
    job = job.decode() if isinstance(job, bytes) else job
    folder = os.path.join(os.path.abspath(path) + ".d", job)
    if re.fullmatch(sys.argv[3], job) and os.path.isdir(folder) and not os.path.islink(folder):
        for name in sorted(os.listdir(folder)):
            p = os.path.join(folder, name)
            if re.fullmatch(sys.argv[4], name) and os.path.isfile(p) and not os.path.islink(p):
                with h5py.File(p, "r") as g:
                    visit(g)
"""


def probe(path, what="checkpoint", folder=False):
    """Read `path` (and with `folder`, every file of its job's folder) in a child
    process; CheckpointError if that crashes or hangs the HDF5 library."""
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE, str(path), "1" if folder else "0",
                            S.JOB_ID_RE.pattern, S.OWN_FILE_RE.pattern, S.JOB_ID],
                           capture_output=True, timeout=config.get().probe_timeout_s,
                           check=False)
    except subprocess.TimeoutExpired:
        raise CheckpointError(f"{path}: reading the {what} hangs the HDF5 library") from None
    if p.returncode < 0:
        raise CheckpointError(f"{path}: the {what} is damaged (the HDF5 library crashed "
                              f"reading it: {signal.Signals(-p.returncode).name})")


def is_lrmpi_file(path):
    """True if `path` is an HDF5 file with lrmpi's format_version and kind (read in a
    child process first: it may be any file)."""
    try:
        probe(path, "file")
        with h5py.File(path, "r") as f:
            return (S.py(f.attrs.get(S.VERSION_ATTR)) == S.FORMAT_VERSION
                    and S.py(f.attrs.get(S.KIND)) in S.KINDS)
    except (CheckpointError, *S.H5_ERRORS):
        return False
