"""SLURM: the job's environment, its end time, and requeueing it (submitit-style).

Nothing here builds a shell command from user strings: subprocess calls take
argument lists, and the job id must be all digits.
"""
import os
import shutil
import subprocess

from lrmpi import config
from lrmpi.errors import ConfigError
from lrmpi.log import logger

ENV = {  # name -> SLURM variable
    "job_id": "SLURM_JOB_ID",
    "rank": "SLURM_PROCID",
    "local_rank": "SLURM_LOCALID",
    "ntasks": "SLURM_NTASKS",
    "restart_count": "SLURM_RESTART_COUNT",
    "end_time": "SLURM_JOB_END_TIME",  # not set by SLURM 22.05: squeue is asked instead
}


def get(name, default=None):
    return os.environ.get(ENV[name], default)


def job_id():
    """This job's id if running inside SLURM, else None."""
    jid = get("job_id", "")
    return jid if jid.isdigit() else None


def restart_count():
    value = get("restart_count", "0")
    return int(value) if value.isdigit() else 0


def end_time():
    """The job's end time (epoch seconds), or None outside SLURM or if unknown; a
    SLURM_JOB_END_TIME that is not epoch seconds is a ConfigError (one line), not
    silently no deadline."""
    value = get("end_time", "").strip()
    if value.isdigit():
        return float(value)
    if value:
        raise ConfigError(f"{ENV['end_time']}={value!r}: expected the job's end time in epoch "
                          "seconds (SLURM sets it); unset it or correct it")
    jid = job_id()
    if jid is None or shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", jid, "-o", "%e"], capture_output=True,
                             text=True, timeout=config.get().slurm_timeout_s,
                             env={**os.environ, "SLURM_TIME_FORMAT": "%s"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return float(value) if out.returncode == 0 and value.isdigit() else None


def requeue(max_restarts):
    """Ask SLURM to requeue this job (it resumes from the checkpoint); True if it will."""
    jid = job_id()
    if jid is None:
        logger.warning("lrmpi: --requeue ignored: not running inside SLURM")
        return False
    if restart_count() >= max_restarts:
        logger.warning("lrmpi: not requeueing: restarted %d times already (max %d)",
                       restart_count(), max_restarts)
        return False
    try:
        p = subprocess.run(["scontrol", "requeue", jid], capture_output=True, text=True,
                           timeout=config.get().slurm_timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.error("lrmpi: scontrol requeue %s failed: %s", jid, exc)
        return False
    if p.returncode != 0:
        logger.error("lrmpi: scontrol requeue %s failed: %s", jid, p.stderr.strip())
        return False
    logger.warning("lrmpi: requeued SLURM job %s (restart %d)", jid, restart_count() + 1)
    return True
