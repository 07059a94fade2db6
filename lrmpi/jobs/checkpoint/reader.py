"""Reading checkpoints: inspect, resume, load_result and users' scripts.

Everything read lies inside the job's folder and carries its identity: a job's files
are found from the job file's own name and its (validated) job id (owned.py), never
from a link's stored name, and never through a symbolic link; a file of another job
is refused; a virtual C's sources must be the resolution's own rank files, covering
C once. Every file and dataset is checked against its checksum (checksum.py), except
those written before checksums ("unchecked": the job file's checksums_from says
which).
"""
import contextlib
import os
import re

import h5py
import numpy as np

from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import checksum, owned, rank_files, resume_data
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.jobs.checkpoint.probe import is_lrmpi_file, probe  # noqa: F401 (re-exported)

_TILE_C = re.compile(r"/?C\d+")


class Checkpoint:
    """Read access to a checkpoint; `safe`: read every file of it in a child process
    first (probe.py)."""

    def __init__(self, path, safe=False):
        self.path = os.path.abspath(path)
        if not os.path.exists(self.path):
            raise CheckpointError(f"no checkpoint at {path}")
        if not os.path.isfile(self.path):  # a pipe would block the HDF5 library's open
            raise CheckpointError(f"{path} is not a regular file, not a checkpoint")
        if safe:
            probe(self.path, folder=True)
        try:
            with h5py.File(self.path, "r") as f:
                self.checked = checksum.verify(f, path, required=S.CHECKSUMS_FROM in f.attrs)
                self.attrs = {k: S.py(v) for k, v in f.attrs.items() if k != S.CHECKSUM}
                g = f.get(S.RESOLUTIONS)
                self.names = sorted(g.keys()) if isinstance(g, h5py.Group) else []
                ga = dict(g.attrs) if isinstance(g, h5py.Group) else {}
                self.durable = [float(x) for x in np.atleast_1d(ga.get(S.DURABLE, []))]
                self.history = {k: [float(x) for x in np.atleast_1d(ga[k])]
                                for k in S.HISTORY if k in ga}
                self.linked = {n for n in self.names
                               if isinstance(g.get(n, getlink=True), h5py.ExternalLink)}
        except CheckpointError:
            raise
        except S.H5_ERRORS as exc:
            raise CheckpointError(f"{path} is not a readable lrmpi checkpoint ({exc})") from None
        version = self.attrs.get(S.VERSION_ATTR)
        if version is None:  # a job's resolution, rank or resume-data file, or another's
            raise CheckpointError(f"{path} is not an lrmpi job file (it has no "
                                  f"{S.VERSION_ATTR}; a job's resolution or rank files are "
                                  "read through its job file: give that one)")
        if version != S.FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format_version {version!r} is not "
                                  f"supported (this lrmpi reads {S.FORMAT_VERSION})")
        # a tampered file must not reach the resume logic with nonsense values
        a = self.attrs
        c = a.get(S.COMPLETED)
        listed = [int(n) for n in self.names if n.isdigit() and len(n) == 3]
        want = ([c] if c else []) if a.get(S.KEEP_ATTR) == "latest" else \
            list(range(1, (c if isinstance(c, int) else 0) + 1))
        cf = a.get(S.CHECKSUMS_FROM, None)
        if a.get(S.KIND) not in S.KINDS or a.get(S.STATUS) not in S.STATUSES or \
                not isinstance(c, int) or len(listed) != len(self.names) or listed != want \
                or (self.checked and not (isinstance(cf, int) and cf >= 1)):
            raise CheckpointError(f"{path} is not a consistent lrmpi checkpoint (kind, status, "
                                  "completed, the resolution list or checksums_from are damaged)")
        # files of resolutions from here on carry checksums (all, for a job written
        # with them; none for one written before)
        self.checksums_from = cf if self.checked else float("inf")
        self.job_id = a.get(S.JOB_ID)
        if self.job_id is not None:
            owned.check_job_id(self.job_id, path)

    def resolution_indices(self):
        return [int(n) for n in self.names]

    @property
    def completed(self):
        return int(self.attrs[S.COMPLETED])

    @property
    def planned(self):
        return int(self.attrs.get(S.PLANNED) or 0)

    @property
    def kind(self):
        return self.attrs.get(S.KIND)

    @property
    def status(self):
        return self.attrs.get(S.STATUS)

    @property
    def folder(self):
        return S.job_dir(self.path, self.job_id or "")

    # --- the job's files ---
    @contextlib.contextmanager
    def _open(self, name, index, what):
        """A file of this job (h5py File, checked) after the identity and checksum
        checks; CheckpointError naming what is missing or damaged."""
        path = owned.own_file(self.path, self.job_id, name, self.path)
        if not os.path.exists(path):
            raise CheckpointError(
                f"{self.path}: {what} {name} is missing from {self.folder}; copy or move "
                f"{os.path.basename(S.sidecar(self.path))} together with "
                f"{os.path.basename(self.path)} (or make one file with `lrmpi pack`)")
        try:
            with h5py.File(path, "r") as f:
                need = index >= self.checksums_from
                checked = checksum.verify(f, path, required=need)
                owner = S.py(f.attrs.get(S.JOB_ID))
                if owner != self.job_id and (need or owner is not None):
                    raise CheckpointError(f"{path} belongs to another job than {self.path}")
                yield f, checked
        except CheckpointError:
            raise
        except S.H5_ERRORS as exc:
            raise CheckpointError(f"{path}: the {what} is unreadable ({exc})") from None

    @contextlib.contextmanager
    def _open_rank(self, name, index, what):
        """A rank file of resolution `index` (as _open), of the resolution and rank its
        name says."""
        with self._open(name, index, what) as (g, checked):
            rank_files.check_place(g, g.filename, name)
            yield g, checked

    def resolution(self, index, datasets=True):
        """(attrs, {name: array}) of one resolution."""
        name = S.res_name(index)
        if name in self.linked and self.job_id:
            with self._open(f"res{name}.h5", index, "resolution") as (f, checked):
                attrs, data = _read_group(f, datasets, f.filename, checked,
                                          lambda: self._virtual_c(f, index, checked))
        else:  # packed (a group inside the file), or written before job ids
            try:
                with h5py.File(self.path, "r") as f:
                    attrs, data = _read_group(f[S.RESOLUTIONS][name], datasets, self.path,
                                              self.checked, None)
            except CheckpointError:
                raise
            except S.H5_ERRORS as exc:
                raise CheckpointError(f"{self.path}: resolution {index} is unreadable ({exc})") \
                    from None
        got = attrs.get(S.INDEX)
        if got is not None and got != index:  # checksums cannot see a file swapped for another
            raise CheckpointError(f"{self.path}: the file of resolution {index} holds resolution "
                                  f"{got} (resolution files swapped or renamed)")
        if index <= len(self.durable):
            attrs[S.DURABLE] = self.durable[index - 1]
        return attrs, data

    def _virtual_c(self, f, index, checked):
        """C written by the ranks: read from the resolution's own rank files (never
        through HDF5's lookup, which follows any path a source names and reads a
        missing one as fill values), each tile checked, C covered exactly once."""
        d, where = f[S.RESULT], f.filename
        listed = [S.py(x) for x in np.atleast_1d(f.attrs.get(S.RANK_FILES, []))]
        names, own = S.rank_name_re(index), {}
        for m in d.virtual_sources():
            name = m.file_name.removeprefix("./")
            (r0, c0), (r1, c1) = m.vspace.get_select_bounds()
            r1, c1 = r1 + 1, c1 + 1
            if not names.fullmatch(name) or name not in listed or \
                    not _TILE_C.fullmatch(m.dset_name) or \
                    m.vspace.get_select_npoints() != (r1 - r0) * (c1 - c0):
                raise CheckpointError(f"{where}: its C reads {m.file_name}:{m.dset_name}, "
                                      "which is not one of this resolution's rank files")
            own.setdefault(name, []).append((m.dset_name.lstrip("/"), r0, r1, c0, c1))
        C, seen = np.empty(d.shape, np.float64), np.zeros(d.shape, bool)
        for name in listed:
            if not names.fullmatch(str(name)):
                raise CheckpointError(f"{where}: rank file {name!r} is not one of its own")
            with self._open_rank(name, index, "rank file (its C)") as (g, rchecked):
                for dset, r0, r1, c0, c1 in own.get(name, []):
                    a = checksum.read(g[dset], g.filename, rchecked or checked)
                    if a.shape != (r1 - r0, c1 - c0) or seen[r0:r1, c0:c1].any():
                        raise CheckpointError(f"{where}: the tiles of its C do not fit")
                    C[r0:r1, c0:c1] = a
                    seen[r0:r1, c0:c1] = True
        if not seen.all():
            raise CheckpointError(f"{where}: its rank files do not cover C")
        return C

    def resolution_summary(self, index):
        """The attributes of resolution `index`, or (keep="latest", its file gone) the
        figures the job file keeps for every resolution."""
        if index in self.resolution_indices():
            return self.resolution(index, datasets=False)[0]
        out = {S.INDEX: index}
        for k, v in self.history.items():
            if index <= len(v):
                out[k] = v[index - 1]
        if index <= len(self.durable):
            out[S.DURABLE] = self.durable[index - 1]
        return out

    def last(self):
        """attrs of the last completed resolution, or {} if there is none."""
        return self.resolution(self.completed, datasets=False)[0] if self.completed else {}

    def problem(self):
        """None if the job's folder holds every resolution the job file lists, each of
        this job and intact; else one line saying what is missing and how to start over."""
        try:
            for i in self.resolution_indices():
                self.resolution(i, datasets=False)
            return None
        except CheckpointError as exc:
            return (f"{exc} -- to start over, run with --overwrite (it writes the new job "
                    f"beside these files and deletes none of them)")

    # --- resume data ---
    def missing_sums(self):
        """The first resolution of a stopped matmul job whose level sums (resume data) are
        missing, or None. Resolution 1's may be its own C; every later one added sums the
        resume must add again (without them the accumulator would be wrong)."""
        if self.kind != "matmul" or not self.job_id or self.completed >= self.planned:
            return None
        return next((i for i in range(2, self.completed + 1) if not self.has_sums(i)), None)

    @property
    def layers(self):
        """A matmul's resolutions that add level sums: all it plans but the CRT one
        (whose rank files hold C only)."""
        return self.planned - (1 if self.attrs.get(S.FINAL) == "crt" else 0)

    def has_sums(self, index):
        return bool(self.job_id) and index <= self.layers and (
            os.path.exists(os.path.join(self.folder, f"sums{S.res_name(index)}.h5"))
            or bool(S.rank_files_of(self.path, self.job_id, index)))

    def sums(self, index, shape, levels=None, safe=False):
        """[(level, S)] of resolution `index`: the exact level sums it added to a
        matmul's accumulator, each S of `shape` (int32 or int64); `levels`: the
        levels its pairs must give. (`safe`: the constructor's probe covered it.)"""
        name = f"sums{S.res_name(index)}.h5"
        if not self.job_id:
            raise CheckpointError(f"{self.path}: no resume data (written before job ids)")
        try:
            if not os.path.exists(os.path.join(self.folder, name)) \
                    and S.rank_files_of(self.path, self.job_id, index):
                out = self._rank_sums(index, shape)
            else:
                with self._open(name, index, f"resume data of resolution {index}") as (f, ok):
                    out = resume_data.read_tile_sums(f, index, shape,
                                           lambda d: checksum.read(d, f.filename, ok))
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: resume data of resolution {index} is "
                                  f"unreadable ({exc})") from None
        if levels is not None and [lv for lv, _ in out] != list(levels):
            raise CheckpointError(f"{self.path}: the resume data of resolution {index} "
                                  "holds other levels than its pairs")
        # the exact adder's contract (kernels.h): |S| < 2^62; a damaged file must not
        # reach it with more
        if any(s.size and (int(s.max()) >= 2**62 or int(s.min()) <= -2**62) for _, s in out):
            raise CheckpointError(f"{self.path}: level sums of resolution {index} out of range")
        return out

    def _rank_sums(self, index, shape):
        """[(level, S)] of a resolution whose ranks wrote their tiles' level sums
        (rank_files.py): every tile of every rank file placed at its corner, once."""
        out, seen = None, np.zeros(shape, bool)
        for path in S.rank_files_of(self.path, self.job_id, index):
            with self._open_rank(os.path.basename(path), index,
                                 "resume data (rank file)") as (g, ok):
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
                                 and c0 + cols <= shape[1]) or \
                            seen[r0:r0 + rows, c0:c0 + cols].any():
                        raise ValueError("rank files disagree on the level sums")
                    data = checksum.read(d, g.filename, ok)
                    for i, (_, S_) in enumerate(out):
                        S_[r0:r0 + rows, c0:c0 + cols] = data[i]
                    seen[r0:r0 + rows, c0:c0 + cols] = True
        if out is None or not seen.all():
            raise ValueError("the rank files do not cover C")
        return out

    def partial(self, index, shape):
        """(C, tiles) of resolution `index` stopped part way: C of `shape` holds the
        tiles listed (rows r0, r1, c0, c1, each within C); None if there is none."""
        name = f"partial{S.res_name(index)}.h5"
        if not self.job_id or not os.path.exists(os.path.join(self.folder, name)):
            return None
        with self._open(name, index, f"finished tiles of resolution {index}") as (f, ok):
            tiles = np.asarray(f.attrs[S.TILES], np.int64).reshape(-1, 4)
            C = checksum.read(f[S.RESULT], f.filename, ok)
        m, n = shape
        if C.shape != tuple(shape) or C.dtype != np.float64 or not all(
                0 <= r0 <= r1 <= m and 0 <= c0 <= c1 <= n for r0, r1, c0, c1 in tiles):
            raise CheckpointError(f"{self.path}: finished tiles do not fit a {m} x {n} C")
        return C, tiles

    def state(self, index):
        """The exact engine state saved with inference resolution `index`."""
        with self._open(f"state{S.res_name(index)}.h5", index,
                        f"resume state of resolution {index}") as (f, ok):
            try:
                return resume_data.read_state(f, index, lambda d: checksum.read(d, f.filename, ok))
            except ValueError as exc:
                raise CheckpointError(f"{f.filename}: {exc}") from None

    def verify(self):
        """Read and check every file of the checkpoint (the resolutions' data, the
        resume data): CheckpointError at the first damage. Returns, per listed
        resolution, "verified" or "unchecked" (written before checksums)."""
        out = {}
        for i in self.resolution_indices():
            self.resolution(i)
            out[i] = "verified" if i >= self.checksums_from else "unchecked"
        if not self.job_id or self.folder is None or not os.path.isdir(self.folder):
            return out
        kind = self.kind
        shape = (int(self.attrs.get("m", 0)), int(self.attrs.get("n", 0)))
        for i in range(1, self.completed + 2):
            # the level sums of listed resolutions only: the files of the one after
            # (rank files sealed before a stop, say) are not resume data (sweep removes them)
            if kind == "matmul" and i <= self.completed and self.has_sums(i):
                self.sums(i, shape)
            if kind == "matmul":
                self.partial(i, shape)
        if kind == "infer" and self.completed and os.path.exists(
                os.path.join(self.folder, f"state{S.res_name(self.completed)}.h5")):
            self.state(self.completed)
        return out


def _read_group(g, datasets, where, checked, virtual):
    attrs = {k: S.py(v) for k, v in g.attrs.items() if k != S.CHECKSUM}
    data = {}
    if datasets:
        for k in g:
            d = g[k]
            data[k] = virtual() if d.is_virtual and virtual is not None else \
                checksum.read(d, where, checked)
    return attrs, data
