"""Tampering with checkpoints in tests: edit a file with h5py and seal it again, as a
tool (or an adversary) that recomputes the checksums would, so that the checks
behind the checksums (identity, ranges, shapes) are what a test meets."""
import h5py

from lrmpi.jobs.checkpoint import checksum
from lrmpi.jobs.checkpoint import schema as S


def reseal(path):
    """Every dataset's checksum from its data again, then the file's."""
    with h5py.File(path, "r+") as f:
        def one(name, obj):
            if isinstance(obj, h5py.Dataset) and not obj.is_virtual:
                checksum.stamp(obj, obj[()])
        f.visititems(one)
        checksum.seal(f)


def flip(path, offset, mask=0xFF):
    """Flip the bits `mask` of the byte at `offset` of a file."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def data_offsets(path):
    """(dataset name, file offset of its first byte) of every contiguous dataset."""
    out = []
    with h5py.File(path, "r") as f:
        def one(name, obj):
            if isinstance(obj, h5py.Dataset) and not obj.is_virtual and obj.size:
                off = obj.id.get_offset()
                if off is not None:
                    out.append((name, off))
        f.visititems(one)
    return out


def snapshot(root):
    """Every path under root: its kind, and content (files) or target (links, never
    followed); the lock aside (its content is the pid of the last job)."""
    import os
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            if name == S.LOCK_NAME:
                continue
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir",)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read())
    return out


__all__ = ["S", "data_offsets", "flip", "reseal", "snapshot"]
