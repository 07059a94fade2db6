"""The HDF5 schema (format version 1): every file, group, dataset and attribute name.

Layout of a job written to OUT.h5::

    OUT.h5                         the job file, small, replaced atomically
      attrs: format_version, kind, status, message, phase, completed, planned, bits,
             planes, order, job_id, lrmpi_version, and the job's other parameters
      /resolutions                 attrs: durable_s, elapsed_s, cmax, bound_abs: one per
                                   resolution completed (also those keep="latest" no
                                   longer lists)
      /resolutions/001  ->  external link to OUT.h5.d/<job_id>/res001.h5:/
      /resolutions/002  ->  ...
    OUT.h5.d/<job_id>/res001.h5    one file per resolution, never rewritten
      attrs: job_id, index, elapsed_s, durable_s, pairs, method, products,
             bound_abs, bound_rel, root_bytes_sent, root_bytes_recv, fallback, ...
      datasets: C (matmul); scores, predicted, refined, ... (infer)
    OUT.h5.d/<job_id>/sums001.h5   matmul resume data: the exact level sums resolution
                                   1 added (dataset sums, attr levels)
    OUT.h5.d/<job_id>/state002.h5  infer resume data: the exact engine state after 2
    OUT.h5.d/<job_id>/partial004.h5  a CRT resolution stopped part way (matmul resume
                                   data): dataset C with the finished tiles, attr
                                   tiles (t, 4) = their r0, r1, c0, c1; gone once the
                                   resolution is complete
    OUT.h5.d/<job_id>/rank0002-res003.h5  results written by the ranks (--write ranks):
                                   rank 2's tiles of resolution 3, datasets C<t> (float64)
                                   and S<t> (its level sums, attrs levels, corner; none in
                                   a CRT resolution's) per tile t; attrs job_id,
                                   resolution (3) and rank (2);
                                   res003.h5's C is then a virtual dataset over these
                                   files (attr rank_files lists them)
    OUT.h5.d/.lock                 the advisory lock of the job writing OUT.h5
    NAME.tmp.PID                   a file being written (renamed to NAME when complete)

Every dataset and every file's root group carries a checksum (attr `checksum`,
checksum.py); the job file's `checksums_from` says from which resolution on.

With keep="latest" the job file lists only the last resolution (its file is the only
one kept; the level sums of all stay, for resume). Every resolution file carries
the job's identity (job_id): a reader resolves
OUT.h5.d/<job_id>/ from the job file's own name and refuses files of another job,
so OUT.h5 and OUT.h5.d can be copied or renamed together. `lrmpi pack` writes one
self-contained file in which /resolutions/NNN are groups instead of links; readers
accept both.
"""
import os
import re

import numpy as np

FORMAT_VERSION = 1
# the job file's own attributes (the job's parameters beside them are its kind's)
VERSION_ATTR = "format_version"
KIND = "kind"
STATUS = "status"
MESSAGE = "message"
COMPLETED = "completed"  # the last resolution listed (0: none yet)
PLANNED = "planned"      # resolutions the job plans
INDEX = "index"          # a resolution file's own number
FINGERPRINT = "fingerprint"  # of the inputs: a resume or replace is of the same ones
KINDS = ("matmul", "infer")
STATUSES = ("running", "complete", "deadline", "failed")
# what the job was doing when its file was last written: preparing (reading and
# preparing its inputs, e.g. a model's digit planes and norms: the job file exists
# before any long preparation, so a stop then still leaves a status) or computing
# (resolutions). Added after format version 1's first files: readers ignore
# attributes they do not know, and a file without it reads as "computing".
PHASE = "phase"
PHASES = ("preparing", "computing")
# an inference job's preparation, in seconds, once it is done: reading the model and
# the data, then making the weights' digit planes and the bounds' norms
PREPARED = ("read_s", "planes_s", "norms_s")

RESOLUTIONS = "resolutions"
RESULT = "C"  # a matmul resolution's product (a dataset, or virtual over rank files)
SIDECAR_SUFFIX = ".d"
LOCK_NAME = ".lock"
JOB_ID = "job_id"
DURABLE = "durable_s"
KEEP_ATTR = "keep"
KEEP = ("all", "latest")  # resolution files kept: all, or the latest only
HISTORY = ("elapsed_s", "cmax", "bound_abs")  # per-resolution figures the job file keeps for all

# a resolution stopped part way (matmul's CRT resolution: finished tiles)
TILES = "tiles"

# checksums (checksum.py): attr of every dataset and of every file's root group; the
# job file's CHECKSUMS_FROM is the first resolution whose files all carry them (1 for
# a job written with checksums; later for an older job resumed since)
CHECKSUM = "checksum"
CHECKSUMS_FROM = "checksums_from"

# the names lrmpi gives its files: the only ones it ever deletes (owned.py), and in a
# job folder the only ones it reads; a job id is 16 hex digits (writer.new_job_id)
JOB_ID_RE = re.compile(r"[0-9a-f]{16}")
OWN_FILE_RE = re.compile(r"(?:res|sums|state|partial)\d{3}\.h5|rank\d{4}-res\d{3}\.h5")
RESUME_FILE_RE = re.compile(r"(?:sums|state|partial)\d{3}\.h5")  # resume data only
STATE_FILE_RE = re.compile(r"state\d{3}\.h5")                      # infer engine states
TMP_SUFFIX = ".tmp."                        # NAME.tmp.PID: a file being written
TMP_SUFFIX_RE = re.compile(r"\.tmp\.\d+")
# files of one resolution that are data only once it is listed (its resolution file,
# level sums, rank files): group 1 is the resolution's index
UNLISTED_RE = re.compile(r"(?:res|sums|rank\d{4}-res)(\d{3})\.h5")

# results written by the ranks
RANK_FILES = "rank_files"  # attr of a resolution file whose C is a virtual dataset
CORNER = "corner"          # attr of a tile's level sums in a rank file: (r0, c0)
RANK = "rank"              # attr of a rank file: the rank that wrote it (and RESOLUTION:
                           # its resolution), the ones its name says
RANK_NAME_RE = re.compile(r"rank(\d{4})-res(\d{3})\.h5")  # groups: rank, resolution

# a matmul job parameter: "crt" when its last planned resolution is the CRT one, which
# adds no level sums (its resume data, if stopped inside it, is a partial file)
FINAL = "final"


def tile_c(t):
    return f"C{t}"


def tile_sums(t):
    return f"S{t}"


# level sums (matmul resume data)
SUMS = "sums"
LEVELS = "levels"
RESOLUTION = "resolution"

# what h5py raises on damaged files: OSError mostly, but also RuntimeError (e.g.
# "Link iteration failed"), KeyError, ValueError and TypeError (found by fuzzing)
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def res_name(index):
    return f"{index:03d}"


def sidecar(path):
    """The folder beside OUT.h5 that holds its resolution files."""
    return os.path.abspath(path) + SIDECAR_SUFFIX


def job_dir(path, job_id):
    return os.path.join(sidecar(path), job_id)


def res_file(path, job_id, index):
    return os.path.join(job_dir(path, job_id), f"res{res_name(index)}.h5")


def sums_file(path, job_id, index):
    return os.path.join(job_dir(path, job_id), f"sums{res_name(index)}.h5")


def state_file(path, job_id, index):
    return os.path.join(job_dir(path, job_id), f"state{res_name(index)}.h5")


def partial_file(path, job_id, index):
    return os.path.join(job_dir(path, job_id), f"partial{res_name(index)}.h5")


def rank_file(path, job_id, index, rank):
    return os.path.join(job_dir(path, job_id), rank_name(index, rank))


def rank_name(index, rank):
    return f"rank{rank:04d}-res{res_name(index)}.h5"


def rank_name_re(index):
    """The name of a rank file of resolution `index`."""
    return re.compile(rf"rank\d{{4}}-res{res_name(index)}\.h5")


def rank_files_of(path, job_id, index):
    """The rank files of resolution `index` in the job's folder (regular files, never
    links), sorted."""
    folder = job_dir(path, job_id)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    pat = rank_name_re(index)
    return sorted(os.path.join(folder, n) for n in names
                  if pat.fullmatch(n) and os.path.isfile(os.path.join(folder, n))
                  and not os.path.islink(os.path.join(folder, n)))


def link_target(path, job_id, index):
    """The external link's file name, relative to OUT.h5's folder (HDF5 resolves it
    there): OUT.h5.d/<job_id>/resNNN.h5."""
    return f"{os.path.basename(sidecar(path))}/{job_id}/res{res_name(index)}.h5"


def attr(value):
    """An attribute value as stored (None -> -1)."""
    return -1 if value is None else value


def py(v):
    """An attribute value as read (bytes -> str, numpy scalars -> Python)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v
