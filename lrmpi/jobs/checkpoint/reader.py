"""Reading checkpoints: inspect, resume, load_result and users' scripts; `lrmpi pack`."""
import os
import signal
import subprocess
import sys

import h5py
import numpy as np

from lrmpi import config
from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import schema as S

_PROBE = """
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    dict(f.attrs)
    g = f.get("resolutions", getlink=False) if "resolutions" in f else None
    if isinstance(g, h5py.Group):
        dict(g.attrs)
        for name in g:
            link = g.get(name, getlink=True)
            if not isinstance(link, h5py.ExternalLink):
                dict(g[name].attrs)
"""


def probe(path, what="checkpoint"):
    """Open a file we did not write in a child process first: fuzzing found damaged
    HDF5 files on which the HDF5 library itself segfaults or loops forever; that
    must end as a clean error here, not as a dead (or hung) MPI job."""
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True,
                           timeout=config.get().probe_timeout_s)
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
            return (S.py(f.attrs.get("format_version")) == S.FORMAT_VERSION
                    and S.py(f.attrs.get("kind")) in S.KINDS)
    except (CheckpointError, *S.H5_ERRORS):
        return False


class Checkpoint:
    """Read access to a checkpoint; `safe`: probe it in a child process first."""

    def __init__(self, path, safe=False):
        self.path = os.path.abspath(path)
        if not os.path.exists(self.path):
            raise CheckpointError(f"no checkpoint at {path}")
        if safe:
            probe(self.path)
        try:
            with h5py.File(self.path, "r") as f:
                self.attrs = {k: S.py(v) for k, v in f.attrs.items()}
                g = f.get(S.RESOLUTIONS)
                self.names = sorted(g.keys()) if isinstance(g, h5py.Group) else []
                ga = dict(g.attrs) if isinstance(g, h5py.Group) else {}
                self.durable = [float(x) for x in np.atleast_1d(ga.get(S.DURABLE, []))]
                self.history = {k: [float(x) for x in np.atleast_1d(ga[k])]
                                for k in S.HISTORY if k in ga}
        except S.H5_ERRORS as exc:
            raise CheckpointError(f"{path} is not a readable lrmpi checkpoint ({exc})") from None
        version = self.attrs.get("format_version")
        if version != S.FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format_version {version!r} is not "
                                  f"supported (this lrmpi reads {S.FORMAT_VERSION})")
        # a tampered file must not reach the resume logic with nonsense values
        a = self.attrs
        c = a.get("completed")
        listed = [int(n) for n in self.names if n.isdigit() and len(n) == 3]
        want = ([c] if c else []) if a.get(S.KEEP_ATTR) == "latest" else \
            list(range(1, (c if isinstance(c, int) else 0) + 1))
        if a.get("kind") not in S.KINDS or a.get("status") not in S.STATUSES or \
                not isinstance(c, int) or len(listed) != len(self.names) or listed != want:
            raise CheckpointError(f"{path} is not a consistent lrmpi checkpoint (kind, status, "
                                  "completed or the resolution list are damaged)")
        self.job_id = a.get(S.JOB_ID)

    def resolution_indices(self):
        return [int(n) for n in self.names]

    @property
    def completed(self):
        return int(self.attrs["completed"])

    def resolution(self, index, datasets=True):
        """(attrs, {name: array}) of one resolution."""
        name = S.res_name(index)
        try:
            with h5py.File(self.path, "r") as f:
                link = f[S.RESOLUTIONS].get(name, getlink=True)
                if isinstance(link, h5py.ExternalLink) and self.job_id:
                    attrs, data = self._linked(index, datasets)
                else:  # packed (a group inside the file), or written before job ids
                    attrs, data = _read_group(f[S.RESOLUTIONS][name], datasets)
        except S.H5_ERRORS as exc:
            raise CheckpointError(f"{self.path}: resolution {index} is unreadable ({exc})") \
                from None
        if index <= len(self.durable):
            attrs[S.DURABLE] = self.durable[index - 1]
        return attrs, data

    def _linked(self, index, datasets):
        """A resolution file, found from this file's own name and the job id (never
        from the link's stored folder name, which a copy or rename leaves behind)."""
        path = S.res_file(self.path, self.job_id, index)
        if not os.path.exists(path):
            raise CheckpointError(
                f"{self.path}: resolution {index} is not in {S.job_dir(self.path, self.job_id)}"
                f"; copy or move {os.path.basename(S.sidecar(self.path))} together with "
                f"{os.path.basename(self.path)} (or make one file with `lrmpi pack`)")
        with h5py.File(path, "r") as f:
            if S.py(f.attrs.get(S.JOB_ID)) != self.job_id:
                raise CheckpointError(f"{path} belongs to another job than {self.path}")
            # C written by the ranks: a virtual dataset reads a missing source file as
            # fill values, silently; refuse instead
            for name in np.atleast_1d(f.attrs.get(S.RANK_FILES, [])):
                if not os.path.exists(os.path.join(os.path.dirname(path), S.py(name))):
                    raise CheckpointError(f"{path}: its C is in {S.py(name)}, which is missing")
            return _read_group(f, datasets)

    def resolution_summary(self, index):
        """The attributes of resolution `index`, or (keep="latest", its file gone) the
        figures the job file keeps for every resolution."""
        if index in self.resolution_indices():
            return self.resolution(index, datasets=False)[0]
        out = {"index": index}
        for k, v in self.history.items():
            if index <= len(v):
                out[k] = v[index - 1]
        if index <= len(self.durable):
            out[S.DURABLE] = self.durable[index - 1]
        return out

    def has_sums(self, index):
        return os.path.exists(S.sums_file(self.path, self.job_id or "", index)) or \
            bool(self.job_id and S.rank_files_of(self.path, self.job_id, index))

    def last(self):
        """attrs of the last completed resolution, or {} if there is none."""
        return self.resolution(self.completed, datasets=False)[0] if self.completed else {}

    def sums(self, index, shape, levels=None, safe=False):
        """[(level, S)] of resolution `index`: the exact level sums it added to a
        matmul's accumulator, each S of `shape` (int32 or int64); `levels`: the
        levels its pairs must give. `safe`: probe the file in a child process first."""
        path = S.sums_file(self.path, self.job_id or "", index)
        if safe and os.path.exists(path):
            probe(path, "resume data")
        try:
            if not os.path.exists(path) and self.job_id \
                    and S.rank_files_of(self.path, self.job_id, index):
                out = self._rank_sums(index, shape)
            else:
                with h5py.File(path, "r") as f:
                    out = S.read_tile_sums(f, index, shape)
        except S.H5_ERRORS as exc:
            raise CheckpointError(f"{self.path}: resume data of resolution {index} is "
                                  f"missing or unreadable ({exc})") from None
        if levels is not None and [lv for lv, _ in out] != list(levels):
            raise CheckpointError(f"{self.path}: the resume data of resolution {index} "
                                  "holds other levels than its pairs")
        # the exact adder's contract (kernels.h): |S| < 2^62; a damaged file must not
        # reach it with more
        if any(s.size and (int(s.max()) >= 2**62 or int(s.min()) <= -2**62) for _, s in out):
            raise CheckpointError(f"{path}: level sums of resolution {index} out of range")
        return out

    def partial(self, index, shape):
        """(C, tiles) of resolution `index` stopped part way: C of `shape` holds the
        tiles listed (rows r0, r1, c0, c1, each within C); None if there is none."""
        path = S.partial_file(self.path, self.job_id or "", index)
        if not self.job_id or not os.path.exists(path):
            return None
        probe(path, "resume data")
        try:
            with h5py.File(path, "r") as f:
                if S.py(f.attrs.get(S.JOB_ID)) != self.job_id:
                    raise CheckpointError(f"{path} belongs to another job than {self.path}")
                tiles = np.asarray(f.attrs[S.TILES], np.int64).reshape(-1, 4)
                C = f["C"][()]
        except S.H5_ERRORS as exc:
            raise CheckpointError(f"{self.path}: the finished tiles of resolution {index} "
                                  f"are unreadable ({exc})") from None
        m, n = shape
        if C.shape != tuple(shape) or C.dtype != np.float64 or not all(
                0 <= r0 <= r1 <= m and 0 <= c0 <= c1 <= n for r0, r1, c0, c1 in tiles):
            raise CheckpointError(f"{path}: finished tiles do not fit a {m} x {n} C")
        return C, tiles

    def _rank_sums(self, index, shape):
        """[(level, S)] of a resolution whose ranks wrote their tiles' level sums
        (rank_files.py): every tile of every rank file placed at its corner."""
        out, seen = None, 0
        for path in S.rank_files_of(self.path, self.job_id, index):
            with h5py.File(path, "r") as g:
                for name in g:
                    if not name.startswith(S.tile_sums("")):
                        continue
                    d = g[name]
                    levels = [int(x) for x in np.atleast_1d(d.attrs[S.LEVELS])]
                    r0, c0 = (int(x) for x in d.attrs[S.CORNER])
                    if out is None:
                        out = [(lv, np.zeros(shape, d.dtype)) for lv in levels]
                    rows, cols = d.shape[1:]
                    if [lv for lv, _ in out] != levels or d.shape[0] != len(levels) or \
                            not (0 <= r0 and r0 + rows <= shape[0] and 0 <= c0
                                 and c0 + cols <= shape[1]):
                        raise ValueError("rank files disagree on the level sums")
                    for i, (_, S_) in enumerate(out):
                        S_[r0:r0 + rows, c0:c0 + cols] = d[i]
                    seen += rows * cols
        if out is None or seen != shape[0] * shape[1]:
            raise ValueError("the rank files do not cover C")
        return out

    def state(self, index):
        """The exact engine state saved with inference resolution `index`."""
        path = S.state_file(self.path, self.job_id or "", index)
        try:
            with h5py.File(path, "r") as f:
                return S.read_state(f, index)
        except S.H5_ERRORS as exc:
            raise CheckpointError(f"{self.path}: resume state of resolution {index} is "
                                  f"missing or unreadable ({exc})") from None


def _read_group(g, datasets):
    attrs = {k: S.py(v) for k, v in g.attrs.items()}
    data = {k: g[k][()] for k in g} if datasets else {}
    return attrs, data


def pack(src, dst, fsync=True):
    """One self-contained file with every resolution of checkpoint `src` (groups
    instead of external links): for archiving or sharing."""
    from lrmpi.jobs.checkpoint.writer import atomic_h5
    ck = Checkpoint(src, safe=True)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise CheckpointError(f"pack: {dst} is the checkpoint itself")
    resolutions = [ck.resolution(i) for i in ck.resolution_indices()]

    def fill(f):
        for k, v in ck.attrs.items():
            f.attrs[k] = v
        g = f.create_group(S.RESOLUTIONS)
        if resolutions:
            g.attrs[S.DURABLE] = [a.get(S.DURABLE, np.nan) for a, _ in resolutions]
        for i, (attrs, data) in zip(ck.resolution_indices(), resolutions):
            r = g.create_group(S.res_name(i))
            for k, v in attrs.items():
                r.attrs[k] = v
            for k, v in data.items():
                r.create_dataset(k, data=v)
    atomic_h5(os.path.abspath(dst), fill, fsync,
              sum(v.nbytes for _, d in resolutions for v in d.values()))
    return len(resolutions)
