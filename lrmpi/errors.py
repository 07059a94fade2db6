"""lrmpi's exceptions: one base class, each subclass also the fitting builtin."""


class LrmpiError(Exception):
    """Base class of every error lrmpi raises on purpose."""


class ConfigError(LrmpiError, ValueError):
    """A bad option value (bits, planes, order, deadline, ...)."""


class InputError(LrmpiError, ValueError):
    """A bad operand or input file: shape, dtype, NaN/Inf, missing dataset, ..."""


class CheckpointError(LrmpiError, OSError):
    """An unreadable, foreign or mismatched checkpoint file."""


class LaunchError(LrmpiError, RuntimeError):
    """The processes were not started as one MPI job (a launcher of another MPI),
    or no launcher of mpi4py's MPI was found."""


class WorkerError(LrmpiError, RuntimeError):
    """A worker rank failed; the remote traceback is attached as __cause__."""


class WorkerTimeout(WorkerError):
    """A worker stopped answering (hung, or stuck in a kernel)."""


class ProtocolError(LrmpiError, RuntimeError):
    """The ranks disagree about the wire format (mixed lrmpi versions) or a message
    breaks it."""


class RemoteTraceback(Exception):
    """A worker's formatted traceback, attached to a WorkerError as its __cause__."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


class Stopped(LrmpiError):
    """A stop (a signal or the deadline) arrived during a long step, which ended
    early: `reason` is the stop's ("received SIGTERM", "deadline reached", ...),
    `doing` what the step was doing ("preparing the model: ...")."""

    def __init__(self, reason, doing="preparing"):
        super().__init__(f"{reason} while {doing}")
        self.reason, self.doing = reason, doing
