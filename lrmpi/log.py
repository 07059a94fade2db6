"""The single "lrmpi" logger; its level comes from LRMPI_LOG_LEVEL (lrmpi.config)."""
import logging

logger = logging.getLogger("lrmpi")


def setup(level=None):
    """Attach a stderr handler once; level from `level` or LRMPI_LOG_LEVEL (INFO)."""
    from lrmpi import config
    level = level or config.get().log_level
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    return logger
