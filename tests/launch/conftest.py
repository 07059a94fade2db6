"""Fixtures for the launch tests."""
import numpy as np
import pytest


@pytest.fixture
def operands(tmp_path):
    rng = np.random.default_rng(42)
    A = rng.standard_normal((160, 96)) * np.exp(rng.uniform(-4, 4, (160, 1)))
    B = rng.standard_normal((96, 120))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    return A, B, tmp_path / "A.npy", tmp_path / "B.npy"
