"""lrmpi's exceptions: one base class, each subclass also the fitting builtin."""


class LrmpiError(Exception):
    """Base class of every error lrmpi raises on purpose."""


class ConfigError(LrmpiError, ValueError):
    """A bad option value (bits, planes, order, deadline, ...)."""


class InputError(LrmpiError, ValueError):
    """A bad operand or input file: shape, dtype, NaN/Inf, missing dataset, ..."""


class CheckpointError(LrmpiError, OSError):
    """An unreadable, foreign or mismatched checkpoint file."""


class WorkerError(LrmpiError, RuntimeError):
    """A worker rank failed; the remote traceback is attached as __cause__."""
