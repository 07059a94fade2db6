"""Shared fixtures for lrmpi's tests (exact references live in exact.py)."""
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(20261127)
