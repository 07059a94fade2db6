"""Shared fixtures for lrmpi's tests (exact references live in exact.py)."""
import os
import tempfile

# the operator-norm cache of the inference bounds: a fresh one per test session
# (child processes inherit it), so the norms are computed, not found
os.environ.setdefault("LRMPI_CACHE_DIR", tempfile.mkdtemp(prefix="lrmpi-norms-"))
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(20261127)
