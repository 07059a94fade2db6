"""What lrmpi deletes and where it reads: only what it names itself, in a job's own folder.

The rules (docs/design.md, "Checkpoints"):
- a file is removed only if its name is one lrmpi gives its files (schema.OWN_FILE_RE,
  or such a name with .tmp.PID), it lies directly in OUT.h5.d/<job_id>/ for a valid
  job id, it is a regular file (a link is never followed, nor removed), and it is not
  one of the running job's inputs;
- a folder is removed only by rmdir once empty, and only a job folder whose files
  lrmpi removed: anything else in it (a user's file, a folder, a link) keeps it;
- OUT.h5.d itself and everything else in it or beside OUT.h5 are never touched, except
  OUT.h5.tmp.PID of a process that no longer exists (a killed job's job file);
- folders are real directories: a link at OUT.h5.d or OUT.h5.d/<job_id> is refused
  (writing or reading through it would reach outside the checkpoint).
"""
import os
import stat

from lrmpi.errors import CheckpointError, ConfigError
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.log import logger


def valid_job_id(job_id):
    return isinstance(job_id, str) and S.JOB_ID_RE.fullmatch(job_id) is not None


def check_job_id(job_id, where):
    """CheckpointError unless `job_id` is a job id lrmpi makes (never a path)."""
    if not valid_job_id(job_id):
        raise CheckpointError(f"{where} is damaged: its job_id {job_id!r} is not one lrmpi "
                              "writes (16 hex digits)")


def own_name(name):
    """True for the names lrmpi gives a job's files (also while being written)."""
    return S.OWN_FILE_RE.fullmatch(_untmp(name)) is not None


def _untmp(name):
    m = S.TMP_SUFFIX_RE.search(name)
    return name[:m.start()] if m and m.end() == len(name) else name


def check_sidecar(out):
    """ConfigError if OUT.h5.d exists as anything but a real folder (a link, a file)."""
    side = S.sidecar(out)
    try:
        st = os.lstat(side)
    except FileNotFoundError:
        return side
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"-o {out}: {side} is a symbolic link (to {os.readlink(side)}); "
                          "lrmpi keeps a job's files in a real folder beside the output and "
                          "never follows a link there: remove the link or choose another output")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"-o {out}: {side} exists and is not a folder; lrmpi keeps a job's "
                          "files there: move it away or choose another output")
    return side


def _real_dir(path):
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def job_folder(out, job_id, where=None):
    """OUT.h5.d/<job_id>/ after checking the id; CheckpointError if it is a link or not
    a folder; None if it does not exist."""
    check_job_id(job_id, where or out)
    side, folder = S.sidecar(out), S.job_dir(out, job_id)
    for p in (side, folder):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            raise CheckpointError(f"{p} is not a folder lrmpi made (a link or a file): lrmpi "
                                  "reads and deletes nothing through it")
    return folder


def make_job_folder(out, job_id):
    """Create OUT.h5.d/<job_id>/ (and OUT.h5.d) for a new job; an existing one is used
    only if it is a real folder (a resumed job)."""
    side = check_sidecar(out)
    try:
        if not os.path.lexists(side):
            os.mkdir(side)
        folder = job_folder(out, job_id)
        if folder is None:
            folder = S.job_dir(out, job_id)
            os.mkdir(folder)
    except OSError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"cannot write the checkpoint at {out}: "
                              f"{exc.strerror or exc}") from None
    return folder


def own_file(out, job_id, name, where=None):
    """The path of file `name` of the job, to read: CheckpointError if the folder or
    the file is a link (it would read from outside the checkpoint) or the name is not
    one lrmpi writes; the path (existing or not) otherwise."""
    if not own_name(name) or os.sep in name:
        raise CheckpointError(f"{where or out}: {name!r} is not a file lrmpi writes")
    folder = job_folder(out, job_id, where) or S.job_dir(out, job_id)
    path = os.path.join(folder, name)
    if os.path.islink(path):
        raise CheckpointError(f"{path} is a symbolic link: lrmpi reads no checkpoint file "
                              "through a link")
    if os.path.exists(path) and not os.path.isfile(path):  # a pipe would block the read
        raise CheckpointError(f"{path} is not a regular file: lrmpi wrote a file there")
    return path


def protected(paths):
    """os.stat of the input files `paths` (None for an input that is no file): never
    deleted, wherever they lie."""
    out = []
    for f in paths:
        if f is not None:
            try:
                out.append(os.stat(f))
            except OSError:
                pass
    return out


def remove(folder, name, protect=()):
    """Remove file `name` of a job folder if the rules allow (module docstring);
    True if it was removed."""
    if not own_name(name):
        return False
    path = os.path.join(folder, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if any(os.path.samestat(st, p) for p in protect):
        logger.info("lrmpi: kept %s: it is one of this job's inputs", path)
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _folder_or_none(out, job_id):
    """The job's folder if the id is valid and the folder a real one, else None."""
    if not valid_job_id(job_id):
        return None
    try:
        return job_folder(out, job_id)
    except CheckpointError:
        return None


def remove_job(out, job_id, protect=()):
    """Remove a job's files (only those remove() allows) and then its folder if that
    left it empty; what is not lrmpi's stays, and so does the folder then."""
    folder = _folder_or_none(out, job_id)
    if folder is None:
        return
    for name in sorted(os.listdir(folder)):
        remove(folder, name, protect)
    try:
        os.rmdir(folder)
    except OSError:
        logger.info("lrmpi: left %s: it holds files lrmpi did not write (or an input)", folder)


def stale_job_file_tmp(out):
    """OUT.h5.tmp.PID files whose process no longer exists (a killed job's job file):
    removed (the caller holds the output's lock)."""
    path = os.path.abspath(out)
    folder, base = os.path.dirname(path), os.path.basename(path)
    for name in os.listdir(folder):
        if _untmp(name) != base or name == base:
            continue
        pid = int(name.rsplit(".", 1)[1])
        stale = os.path.join(folder, name)
        if os.path.exists(f"/proc/{pid}") or os.path.islink(stale) or not os.path.isfile(stale):
            continue
        try:
            os.unlink(stale)
        except OSError:
            pass


def sweep(out, job_id, completed=None):
    """What killed or stopped earlier runs of this job left: temporary files in its own
    folder, OUT.h5.tmp.PID of dead processes and, given the resolutions the job file
    lists (`completed`), the files of later ones that never were (rank files sealed
    when a stop came before the last rank's: a resume writes them again, maybe with
    other ranks, and the reader lists rank files by name). Nothing else (other folders
    in OUT.h5.d may be another job's data). Call under the output's lock."""
    stale_job_file_tmp(out)
    folder = _folder_or_none(out, job_id)
    if folder is None:
        return
    for name in os.listdir(folder):
        if own_name(name) and _untmp(name) != name:
            remove(folder, name)
        elif completed is not None and (m := S.UNLISTED_RE.fullmatch(name)) \
                and int(m.group(1)) > completed:
            remove(folder, name)


def strangers(out, job_ids):
    """Names in OUT.h5.d other than the lock and the job folders `job_ids` (for inspect:
    lrmpi leaves them)."""
    side = S.sidecar(out)
    try:
        names = os.listdir(side)
    except OSError:
        return []
    return sorted(n for n in names if n != S.LOCK_NAME and n not in job_ids)
