"""Checksums of everything lrmpi writes: damage is an error, never a number.

Every dataset carries an attribute `checksum`: a digest (lrmpi.digests: XXH3-128,
or SHA-256's first 128 bits in files written before digests named their algorithm)
of its dtype, shape and bytes in C order, computed from the array written (not read
back). Every file's root group carries `checksum` over its attributes (names and
values as h5py reads them), and its members: a dataset by name and its checksum, a
virtual dataset by its mapping (source files, datasets, selections), a group by its
own digest, a link by its target. A reader recomputes the root digest from what it
reads (cheap: attributes only) and each dataset's when it reads its data.

Files written before checksums have none and still read ("unchecked"); the job
file's `checksums_from` (schema) says from which resolution on every file of the
job must carry them, so a damaged name cannot make a checked file pass for an
unchecked one. The root checksum (attributes and names: small) stays SHA-256.
"""
import hashlib

import h5py
import numpy as np

from lrmpi.digests import Digest, is_legacy
from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import schema as S


def array_digest(a, dtype=None, legacy=False):
    """The checksum of an array (as it is stored: `dtype`, C order); `legacy`: as
    lrmpi wrote it before (SHA-256)."""
    a = np.ascontiguousarray(a, dtype)
    h = Digest(f"{a.dtype.str}{a.shape}".encode(), legacy)
    h.update(memoryview(a.reshape(-1)).cast("B") if a.size else b"")
    return h.hexdigest()


def tiled_digest(shape, dtype, tiles):
    """array_digest of an array of `shape` (..., m, n) given as tiles (r0, c0, parts)
    on a grid (tiles of a row band share r0 and height), parts[l] the tile's slice of
    leading index l: hashed row by row in C order, never assembled."""
    dtype = np.dtype(dtype)
    h = Digest(f"{dtype.str}{tuple(shape)}".encode())
    bands = {}
    for r0, c0, parts in tiles:
        bands.setdefault(r0, []).append((c0, parts))
    lead = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    for l in range(lead):
        for r0 in sorted(bands):
            band = sorted(bands[r0], key=lambda t: t[0])
            for i in range(np.asarray(band[0][1][l]).shape[0]):
                for _, parts in band:
                    h.update(np.ascontiguousarray(parts[l][i], dtype).data.cast("B"))
    return h.hexdigest()


def put(group, name, data, **options):
    """group[name] = data, with its checksum."""
    d = group.create_dataset(name, data=data, **options)
    d.attrs[S.CHECKSUM] = array_digest(data, d.dtype)
    return d


def stamp(d, data):
    """The checksum of dataset `d` once it holds `data` (written in parts)."""
    d.attrs[S.CHECKSUM] = array_digest(data, d.dtype)


def seal(f):
    """The file's root checksum, last thing before it is closed."""
    if S.CHECKSUM in f.attrs:
        del f.attrs[S.CHECKSUM]
    f.attrs[S.CHECKSUM] = _group_digest(f, f.filename)


def checked(f):
    """True if the file carries a root checksum (was written with checksums)."""
    return S.CHECKSUM in f.attrs


def verify(f, where, required=False):
    """CheckpointError if the file's attributes or members differ from its root
    checksum (or it has none while `required`); True if checked, False if it was
    written before checksums."""
    if S.CHECKSUM not in f.attrs:
        if required:
            raise CheckpointError(f"{where} is damaged: its checksum is missing")
        return False
    try:
        ok = S.py(f.attrs[S.CHECKSUM]) == _group_digest(f, where)
    except S.H5_ERRORS as exc:
        raise CheckpointError(f"{where} is damaged ({exc})") from None
    if not ok:
        raise CheckpointError(f"{where} is damaged: its checksum does not match")
    return True


def read(d, where, check=True):
    """The data of dataset `d`, verified against its checksum when `check`."""
    a = d[()]
    if check:
        want = S.py(d.attrs.get(S.CHECKSUM))
        if want is None or want != array_digest(a, d.dtype, is_legacy(want)):
            raise CheckpointError(f"{where}: dataset {d.name.lstrip('/')} is damaged (its "
                                  "checksum does not match)")
    return a


def _group_digest(g, where):
    h = hashlib.sha256()
    for name in sorted(g.attrs):
        if name == S.CHECKSUM and g.name == "/":
            continue
        h.update(b"a" + _bytes(name) + _value(g.attrs[name]))
    for name in sorted(g):
        link = g.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            h.update(b"e" + _bytes(name) + _bytes(link.filename) + _bytes(link.path))
        elif isinstance(link, h5py.SoftLink):
            h.update(b"l" + _bytes(name) + _bytes(link.path))
        else:
            obj = g[name]
            if isinstance(obj, h5py.Group):
                h.update(b"g" + _bytes(name) + _group_digest(obj, where).encode())
            elif obj.is_virtual:
                h.update(b"v" + _bytes(name) + _virtual_digest(obj))
            else:
                if S.CHECKSUM not in obj.attrs:
                    raise CheckpointError(f"{where}: dataset {obj.name.lstrip('/')} is damaged "
                                          "(its checksum is missing)")
                h.update(b"d" + _bytes(name) + _value(obj.attrs[S.CHECKSUM])
                         + _attrs_bytes(obj))
    return h.hexdigest()[:32]


def _attrs_bytes(d):
    """A dataset's other attributes (its checksum covers only its data)."""
    return b"".join(b"a" + _bytes(k) + _value(d.attrs[k]) for k in sorted(d.attrs)
                    if k != S.CHECKSUM)


def _virtual_digest(d):
    out = [repr((d.shape, d.dtype.str))]
    for m in d.virtual_sources():
        out.append(repr((m.file_name, m.dset_name, m.vspace.get_select_bounds(),
                         m.vspace.get_select_npoints(), m.src_space.get_select_type())))
    return "\n".join(out).encode()


def _bytes(s):
    s = s.encode() if isinstance(s, str) else bytes(s)
    return len(s).to_bytes(8, "little") + s


def _value(v):
    if isinstance(v, (str, bytes)):
        return (b"s" if isinstance(v, str) else b"b") + _bytes(v)
    a = np.asarray(v)
    if a.dtype.kind == "O":
        return b"o" + repr(a.shape).encode() + b"".join(_value(x) for x in a.reshape(-1))
    a = np.ascontiguousarray(a)
    return b"n" + _bytes(f"{a.dtype.str}{a.shape}") + _bytes(a.tobytes())
