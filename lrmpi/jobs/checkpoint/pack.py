"""`lrmpi pack`: one self-contained file with every resolution of a checkpoint."""
import os

from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import checksum
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.jobs.checkpoint.atomic import atomic_h5
from lrmpi.jobs.checkpoint.reader import Checkpoint


def pack(src, dst, fsync=True):
    """One self-contained file with every resolution of checkpoint `src` (groups
    instead of external links; every file of `src` checked on the way): for archiving
    or sharing, and for plain h5py readers."""
    ck = Checkpoint(src, safe=True)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise CheckpointError(f"pack: {dst} is the checkpoint itself")
    resolutions = [ck.resolution(i) for i in ck.resolution_indices()]

    def fill(f):
        for k, v in ck.attrs.items():
            f.attrs[k] = v
        # resolutions copied from files written before checksums stay "unchecked"
        f.attrs[S.CHECKSUMS_FROM] = ck.checksums_from if ck.checked else ck.completed + 1
        g = f.create_group(S.RESOLUTIONS)
        if resolutions:
            g.attrs[S.DURABLE] = [a.get(S.DURABLE, float("nan")) for a, _ in resolutions]
        for k, v in ck.history.items():
            g.attrs[k] = v
        for i, (attrs, data) in zip(ck.resolution_indices(), resolutions):
            r = g.create_group(S.res_name(i))
            for k, v in attrs.items():
                r.attrs[k] = v
            for k, v in data.items():
                checksum.put(r, k, v)
    atomic_h5(os.path.abspath(dst), fill, fsync,
              sum(v.nbytes for _, d in resolutions for v in d.values()))
    return len(resolutions)
