"""SLURM job scripts: the templates (package data) and filling them in.

srun.sbatch     lrmpi matmul / infer as an srun step; the script requeues the job
                after srun has returned (every rank gone).
mpiexec.sbatch  the same under the mpiexec of mpi4py's MPI, exec'ed so that SLURM's
                B:USR1 reaches it; lrmpi --requeue requeues.

`lrmpi jobscript` prints one with the block marked EDIT filled in (absolute paths,
this Python); the repository's jobscripts/ holds the same two files, checked
identical by a test, so there is one source. Values are written shell-quoted
(shlex.quote), arrays as bash arrays: a path or option with blanks or glob
characters reaches lrmpi as one word.
"""
import re
import shlex
from importlib import resources

# lrmpi jobscript KIND -> (template, lrmpi command)
KINDS = {"matmul": ("srun.sbatch", "matmul"), "infer": ("srun.sbatch", "infer"),
         "matmul-mpiexec": ("mpiexec.sbatch", "matmul"),
         "infer-mpiexec": ("mpiexec.sbatch", "infer")}
TEMPLATES = sorted({t for t, _ in KINDS.values()})

# a knob of the EDIT block: NAME=VALUE, VALUE a word or a (bash array), then a comment
_KNOB = re.compile(r"^(?P<name>[A-Z_]+)=(?P<value>\([^)]*\)|\S*)(?P<pad>\s*)(?P<comment>#.*)?$")
_SBATCH = re.compile(r"^#SBATCH --(?P<name>[a-z-]+)=(?P<value>.*)$")


def template(name):
    """The text of template `name` (srun.sbatch or mpiexec.sbatch)."""
    return resources.files(__name__).joinpath(name).read_text()


def shell_value(value):
    """A str as one shell word, a list as a bash array of words."""
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(shlex.quote(str(v)) for v in value) + ")"
    return shlex.quote(str(value))


def sbatch_names(text):
    """The option names of a template's own #SBATCH lines (job-name, ntasks, ...)."""
    return {m[1] for m in map(re.compile(r"^#SBATCH --([a-z-]+)(?:=|$)").match,
                              text.splitlines()) if m}


def fill(text, knobs, sbatch, extra_sbatch=(), header=None):
    """`text` with the EDIT block's NAME=... lines set from `knobs` (comments kept),
    `#SBATCH --name=` lines from `sbatch`, `extra_sbatch` options added after the
    last #SBATCH line and `header` comment lines after the first line. KeyError if a
    knob or sbatch option is not in the template."""
    knobs, sbatch = dict(knobs), dict(sbatch)
    out, in_block, last_sbatch = [], False, 0
    for line in text.splitlines():
        if line.startswith("# ---- EDIT"):
            in_block = True
        elif line.startswith("# ----"):
            in_block = False
        m = _KNOB.match(line) if in_block else None
        if m and m["name"] in knobs:
            new = f"{m['name']}={shell_value(knobs.pop(m['name']))}"
            if m["comment"]:
                width = len(m["name"]) + 1 + len(m["value"]) + len(m["pad"])
                new = new.ljust(width) + m["comment"] if len(new) < width else \
                    f"{new}  {m['comment']}"
            line = new
        s = _SBATCH.match(line)
        if s:
            if s["name"] in sbatch:
                line = f"#SBATCH --{s['name']}={sbatch.pop(s['name'])}"
            last_sbatch = len(out)
        out.append(line)
    if knobs or sbatch:
        raise KeyError(f"not in the template: {', '.join([*knobs, *sbatch])}")
    out[last_sbatch + 1:last_sbatch + 1] = [f"#SBATCH {opt}" for opt in extra_sbatch]
    out[1:1] = [f"# {line}" for line in (header or [])]
    return "\n".join(out) + "\n"
