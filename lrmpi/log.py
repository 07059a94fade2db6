"""The single "lrmpi" logger; its level comes from LRMPI_LOG_LEVEL (lrmpi.config)."""
import logging
import sys

logger = logging.getLogger("lrmpi")


class _Stderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a record is emitted (a test's capture,
    a stream that tolerates a closed pipe), not the one there was at setup."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup(level=None):
    """Attach a stderr handler once; level from `level` or LRMPI_LOG_LEVEL (INFO)."""
    from lrmpi import config
    level = level or config.get().log_level
    if not logger.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    return logger
