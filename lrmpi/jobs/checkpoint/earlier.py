"""An earlier result in the output, kept until the job replacing it has one at least as
good (writer.py), and deleted then only if lrmpi can prove its files are its own.

At least as good: complete, or a bound_rel no larger than the earlier result's last. Any
resolution of the new job is, when the earlier result is of other inputs (kind or
fingerprint differ: a result of other inputs is not one of these) or its folder does
not hold it intact (a job file copied over another, an edited job id, a damaged file:
Checkpoint.problem). Only an intact earlier result's files are deleted (owned.py's
rules): the intact job file is what names them as lrmpi's.
"""
import math
import os

from lrmpi.digests import is_legacy
from lrmpi.jobs.checkpoint import owned
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.log import logger


class Earlier:
    """The earlier result of checkpoint `ckpt` (a reader.Checkpoint) at `path`."""

    def __init__(self, ckpt, path):
        self.ckpt, self.path = ckpt, path
        self.ok, self.rel = False, math.inf
        problem = ckpt.problem()
        if problem is None:
            self.ok, self.rel = True, bound_rel(ckpt.last())
        else:
            logger.warning("lrmpi: the earlier result in %s is not intact (%s): this job "
                           "replaces it at its first resolution and deletes none of its "
                           "files", path, problem)

    def same_inputs(self, kind, attrs, given=None):
        """True if the earlier result is of the inputs of a job of `kind` with `attrs`
        (their fingerprint resolved: on the writer thread). `given`: the fingerprint
        as the job gave it (job.Fingerprint), to compare with an earlier result's
        written before digests named their algorithm."""
        e = self.ckpt.attrs
        fp, stored = attrs.get(S.FINGERPRINT), e.get(S.FINGERPRINT)
        if e.get(S.KIND) != kind or fp is None or callable(fp):
            return False
        if is_legacy(stored) and hasattr(given, "matches"):
            return given.matches(stored)
        return stored == fp

    def beaten_by(self, kind, attrs, res_attrs, given=None):
        """A resolution (`res_attrs`) of the job may replace the earlier result."""
        return not self.ok or not self.same_inputs(kind, attrs, given) or \
            bound_rel(res_attrs) <= self.rel

    def remove(self, job_id, protect):
        """The earlier result's files, if it was intact (its job file names them)."""
        if not self.ok:
            return
        earlier = self.ckpt.job_id
        if earlier and earlier != job_id:
            owned.remove_job(self.path, earlier, protect)
        elif not earlier:  # written before job ids: its files lay in OUT.h5.d itself
            side = S.sidecar(self.path)
            for name in os.listdir(side):
                owned.remove(side, name, protect)


def bound_rel(attrs):
    """A resolution's bound_rel (inf if missing or not a number)."""
    v = attrs.get("bound_rel", math.inf) if attrs else math.inf
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if v != v else v
