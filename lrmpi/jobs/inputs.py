"""Reading operands from `.npy` files or `FILE.h5:/dataset` (docs/design.md, "Bad input").

No pickle is ever loaded from a user file (allow_pickle=False), and an array
larger than memory is refused from its header, before anything is allocated.
"""
import os

import numpy as np

from lrmpi import config
from lrmpi.errors import InputError


def _available_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 40


def split_spec(spec):
    """'FILE.h5:/dataset' -> ('FILE.h5', '/dataset'); 'A.npy' -> ('A.npy', None)."""
    for ext in (".h5:", ".hdf5:", ".hdf:"):
        idx = spec.lower().find(ext)
        if idx >= 0:
            return spec[:idx + len(ext) - 1], spec[idx + len(ext):] or "/"
    return spec, None


def check_size(shape, dtype, name):
    need = int(np.prod(shape, dtype=np.float64)) * 8
    fraction, memory = config.get().memory_fraction, _available_memory()
    if need > fraction * memory:
        raise InputError(f"{name}: {shape[0]}x{shape[1] if len(shape) > 1 else 1} needs "
                         f"{_size(need)} as float64, more than LRMPI_MEMORY_FRACTION "
                         f"({fraction:g}) of this machine's memory ({_size(memory)})")


def _size(nbytes):
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def load(spec, name):
    """Load an operand; raise InputError with a one-line reason on any problem."""
    path, dataset = split_spec(str(spec))
    if not os.path.exists(path):
        raise InputError(f"{name}: no such file: {path}")
    if os.path.isdir(path):
        raise InputError(f"{name}: {path} is a directory, not a file")
    if not os.path.isfile(path):  # a named pipe would block the read, a device never end
        raise InputError(f"{name}: {path} is not a regular file (a pipe or a device?)")
    if dataset is not None:
        return _load_h5(path, dataset, name)
    if path.endswith(".npy"):
        return _load_npy(path, name)
    raise InputError(f"{name}: {path}: expected a .npy file or FILE.h5:/dataset")


def _load_npy(path, name):
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
    except OSError as exc:  # permissions, a folder: not the file's fault
        raise InputError(f"{name}: cannot read {path} ({exc.strerror or exc})") from None
    except Exception as exc:  # numpy raises ValueError/EOFError/... for bad headers
        raise InputError(f"{name}: {path} is not a valid .npy file ({exc})") from None
    if dtype.hasobject:
        raise InputError(f"{name}: {path} holds Python objects (pickled data is never loaded)")
    if len(shape) == 2:
        check_size(shape, dtype, name)
    # float64 (and float32) in C order is used in place, memory-mapped: the encoder
    # reads the page cache directly instead of a 128 MB copy (n = 4096) whose first
    # touch costs more than reading it (the file must not change while the job runs)
    native = dtype in (np.dtype(np.float64), np.dtype(np.float32)) and dtype.isnative \
        and not fortran
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if native else None)
    except Exception as exc:
        raise InputError(f"{name}: {path}: cannot read array ({exc})") from None


def _load_h5(path, dataset, name):
    import h5py

    from lrmpi.jobs.checkpoint.schema import H5_ERRORS
    try:
        f = h5py.File(path, "r")
    except H5_ERRORS as exc:
        raise InputError(f"{name}: {path} is not a readable HDF5 file ({exc})") from None
    try:
        with f:
            if dataset not in f:
                raise InputError(f"{name}: {path} has no dataset {dataset}")
            ds = f[dataset]
            if not isinstance(ds, h5py.Dataset):
                raise InputError(f"{name}: {path}:{dataset} is a group, not a dataset")
            if len(ds.shape) == 2:
                check_size(ds.shape, ds.dtype, name)
            if ds.is_virtual:
                _check_sources(ds, path, dataset, name)
            if ds.external:
                _check_external(ds, path, dataset, name)
            return ds[()]
    except H5_ERRORS as exc:
        raise InputError(f"{name}: {path}:{dataset}: cannot read ({exc})") from None


def _check_external(ds, path, dataset, name):
    """A dataset in external raw files: every byte it reads is in them. HDF5 reads the
    bytes past a short file's end as zeros (a missing file is its own error). Names
    are found as HDF5 finds them: its external-file prefix (${ORIGIN}: the .h5's
    folder), else the working folder; the segments are read in order, as far as the
    dataset's bytes reach."""
    try:
        prefix = os.fsdecode(ds.id.get_access_plist().get_efile_prefix() or b"")
    except (AttributeError, OSError):
        prefix = ""
    prefix = prefix.replace("${ORIGIN}", os.path.dirname(os.path.abspath(path)))
    left = ds.dtype.itemsize * ds.size
    for file, offset, size in ds.external:
        if left <= 0:
            break
        file = os.fsdecode(file)
        where = file if os.path.isabs(file) or not prefix else os.path.join(prefix, file)
        need = min(size, left)
        left -= need
        try:
            have = os.path.getsize(where)
        except OSError:
            raise InputError(f"{name}: {path}:{dataset} is stored in {file}, which cannot be "
                             "read") from None
        if have < offset + need:
            raise InputError(f"{name}: {path}:{dataset} is stored in {file}, which holds "
                             f"{max(have - offset, 0)} of the {need} bytes read from it (HDF5 "
                             "would read zeros for the rest)")


def _check_sources(ds, path, dataset, name):
    """A virtual dataset's every source file and dataset exist: HDF5 reads a missing
    one as fill values, which would be multiplied as if they were the input."""
    import h5py
    for m in ds.virtual_sources():
        if m.file_name == ".":
            continue
        src = m.file_name if os.path.isabs(m.file_name) else \
            os.path.join(os.path.dirname(os.path.abspath(path)), m.file_name)
        try:
            with h5py.File(src, "r") as f:
                ok = isinstance(f.get(m.dset_name), h5py.Dataset)
        except OSError:
            ok = False
        if not ok:
            raise InputError(f"{name}: {path}:{dataset} is a virtual dataset whose source "
                             f"{m.file_name}:{m.dset_name} is missing (HDF5 would read fill "
                             "values)")
