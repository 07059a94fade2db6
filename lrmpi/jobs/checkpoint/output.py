"""What `-o` may name, and one writer per output.

Before any work: the output must not be one of the job's inputs, nor an existing
file lrmpi did not write, and OUT.h5.d must be a real folder if it exists (never a
link); an existing lrmpi result is replaced only with --overwrite (and then only
once the new job has one at least as good, see writer.py) or continued with
--resume (and then only if its folder holds it intact). While a job runs it holds
an advisory lock (flock) on OUT.h5.d/.lock: a second job on the same output is
refused at once, and the lock dies with its process, so a killed job never leaves a
stale lock.
"""
import fcntl
import os
import stat

from lrmpi.errors import CheckpointError, ConfigError
from lrmpi.jobs.checkpoint import owned
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.jobs.checkpoint.probe import is_lrmpi_file
from lrmpi.jobs.checkpoint.reader import Checkpoint


def input_file(spec):
    """The file of an input spec ('A.npy', 'FILE.h5:/dataset'), or None for arrays."""
    if not isinstance(spec, (str, os.PathLike)):
        return None
    from lrmpi.jobs.inputs import split_spec
    return split_spec(str(spec))[0]


def check_output(out, inputs=(), resume=False, what="-o"):
    """ConfigError/CheckpointError if `out` may not be written: a directory, a missing
    folder, one of `inputs` (paths or specs), an existing file lrmpi did not write
    (with `resume`: anything but a readable checkpoint), or an OUT.h5.d that is not a
    real folder. `what` names the output in messages. No side effects."""
    path = os.path.abspath(out)
    if os.path.isdir(path):  # a bad -o, as a symbolic link is: exit 2
        raise ConfigError(f"{what} {out} is a directory")
    if os.path.islink(path):  # the new file is renamed onto the name: the link would go
        raise ConfigError(f"{what} {out} is a symbolic link: lrmpi replaces the file by "
                          "renaming a new one onto its name, which would replace the link; "
                          "give the file it points to, or another name")
    if os.path.exists(path) and not os.path.isfile(path):  # as a directory there
        raise CheckpointError(f"{what} {out} exists and is not a regular file (a pipe or a "
                              "device?); choose another output")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise CheckpointError(f"output directory {parent} does not exist")
    _check_name_length(out, path, parent, what)
    for spec in inputs:
        f = input_file(spec)
        if f is not None and (os.path.abspath(f) == path or (
                os.path.exists(f) and os.path.exists(path) and os.path.samefile(f, path))):
            raise ConfigError(f"{what} {out} is one of the job's inputs; choose another output")
    if what == "-o":
        owned.check_sidecar(path)
    if os.path.exists(path):
        if resume:
            Checkpoint(path, safe=True)  # its own clear error if it is not one
        elif not is_lrmpi_file(path):
            raise ConfigError(f"{what} {out} exists and was not written by lrmpi; choose "
                              "another output or remove it")
        if not os.access(path, os.W_OK) or not os.access(parent, os.W_OK):
            raise CheckpointError(f"cannot write the checkpoint at {path}: "
                                  f"{os.strerror(13)} (the earlier result is untouched)")


# the longest name lrmpi makes beside OUT: OUT.tmp.PID (a PID has at most 7 digits)
LONGEST_SUFFIX = len(S.TMP_SUFFIX) + 7


def _check_name_length(out, path, parent, what):
    """Refuse, before anything is made, an output whose temporary name (OUT.tmp.PID)
    the folder's file system cannot hold: it failed after the job folder was made."""
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        return
    name = os.fsencode(os.path.basename(path))
    if len(name) + LONGEST_SUFFIX > limit:
        raise ConfigError(f"{what} {out}: the name is {len(name)} bytes long; lrmpi writes "
                          f"NAME{S.TMP_SUFFIX}PID beside it, and this file system takes "
                          f"names of up to {limit} bytes: choose a name of at most "
                          f"{limit - LONGEST_SUFFIX} bytes")


def check_side_file(path, setting, out, inputs=()):
    """ConfigError if a file the job writes beside its result (`setting` names it, e.g.
    the stats file) is the output, inside OUT.h5.d or one of the job's inputs: it
    would replace them (the job exits 0 with its result or an operand gone)."""
    if not path:
        return
    if not path.strip():  # " " wrote a file named " " in the working folder
        raise ConfigError(f"{setting} {path!r} is blank: give a file name (or leave it "
                          "unset)")
    p = os.path.abspath(path)
    if os.path.islink(p):  # written through, its target would be lost
        raise ConfigError(f"{setting} {path} is a symbolic link: name a file of its own")
    if os.path.exists(p) and not os.path.isfile(p):  # a pipe would block the write
        raise ConfigError(f"{setting} {path} exists and is not a regular file: choose another")
    targets = [f for f in map(input_file, inputs) if f is not None]
    if out:
        o = os.path.abspath(out)
        side = S.sidecar(o)
        if p == o or p == side or p.startswith(side + os.sep) or (
                os.path.exists(p) and os.path.exists(o) and os.path.samefile(p, o)):
            raise ConfigError(f"{setting} {path} is the job's output ({out}) or in its folder: "
                              "choose another file")
    for f in targets:
        if os.path.abspath(f) == p or (os.path.exists(f) and os.path.exists(p)
                                       and os.path.samefile(f, p)):
            raise ConfigError(f"{setting} {path} is one of the job's inputs: choose another file")
    if os.path.exists(p) and not _ours(p):  # a user's file is never replaced
        raise ConfigError(f"{setting} {path} exists and is not a file lrmpi wrote there: "
                          "choose another name (or remove it)")


def _ours(path, most=1 << 26):
    """Whether `path` is a side file lrmpi wrote (a stats file: a JSON object of
    `ranks` and `resolutions`) with no other name (a hard link would be written
    through: another file changed)."""
    import json
    try:
        st = os.stat(path)
        if st.st_nlink > 1 or st.st_size > most:
            return False
        with open(path, "rb") as f:
            d = json.loads(f.read())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and set(d) == {"ranks", "resolutions"}


class OutputLock:
    """The advisory lock of the one job writing `out` (held until release())."""

    def __init__(self, out):
        self.path = os.path.abspath(out)
        self.fd = None

    def acquire(self):
        side = owned.check_sidecar(self.path)
        lock = os.path.join(side, S.LOCK_NAME)
        try:
            if not os.path.lexists(side):
                os.mkdir(side)
            # never through a link: the lock's content (a pid) would overwrite its target;
            # never waiting on a named pipe (O_NONBLOCK)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            why = "it is a symbolic link" if os.path.islink(lock) else exc.strerror or exc
            raise CheckpointError(f"cannot write the checkpoint at {self.path}: {lock}: "
                                  f"{why}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a pipe, a device: not lrmpi's lock
            os.close(fd)
            raise CheckpointError(f"cannot write the checkpoint at {self.path}: {lock} is not "
                                  "a regular file (lrmpi's lock is one); remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CheckpointError(f"another lrmpi job (pid {holder}) is writing {self.path}; "
                                  "wait for it to end or choose another output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def writer_alive(out):
    """True if a job holds the lock of `out` now (a checkpoint marked `running` with no
    such job was killed before it could record how it ended)."""
    try:
        fd = os.open(os.path.join(S.sidecar(out), S.LOCK_NAME),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def existing(out, *, resume, overwrite):
    """The checkpoint already at `out` (under the lock), or None; refuses to go on
    when it holds a result and neither --resume nor --overwrite was given, and to
    resume one whose folder does not hold it intact (every file it lists, of this job,
    undamaged)."""
    path = os.path.abspath(out)
    if not os.path.exists(path):
        return None
    ck = Checkpoint(path, safe=True)
    if not (resume or overwrite) and ck.completed > 0:
        raise ConfigError(f"{out} holds an lrmpi result ({ck.attrs['status']}, resolution "
                          f"{ck.completed}/{ck.attrs.get('planned')}): pass --resume to continue "
                          "it or --overwrite to replace it (the earlier result stays until the "
                          "new one is at least as good)")
    if resume and ck.completed > 0:
        try:
            ck.verify()
            gone = ck.missing_sums()
            if gone is not None and not ck.linked:
                raise CheckpointError(f"{path} is one packed file (`lrmpi pack`): it keeps the "
                                      "results, not the resume data; resume the checkpoint it "
                                      "was packed from")
            if gone is not None:
                raise CheckpointError(f"{path}: the resume data of resolution {gone} "
                                      f"(sums{S.res_name(gone)}.h5) is missing from {ck.folder}")
        except CheckpointError as exc:
            raise CheckpointError(f"cannot resume: {exc} -- to start over, run with "
                                  "--overwrite (it writes the new job beside these files and "
                                  "deletes none of them)") from None
    return ck


def sweep(out, ck):
    """What killed runs left: temporary files of the checkpoint `ck`'s job (if any)
    and of the job file. Nothing else: other folders in OUT.h5.d may be another job's
    data (owned.py). Call under the lock."""
    if ck is None:
        owned.sweep(out, None)
    else:
        owned.sweep(out, ck.job_id, ck.completed)
