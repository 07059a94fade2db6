"""Bad operands and options give one clear error naming the problem."""
import numpy as np
import pytest

from lrmpi import ConfigError, InputError, LayeredMatmul

GOOD = np.ones((3, 4))
GOOD_B = np.ones((4, 2))


@pytest.mark.parametrize("A, B, match", [
    (np.array([[1.0, np.nan, 0, 0]] * 3), GOOD_B, "A: contains NaN or Inf"),
    (GOOD, np.array([[np.inf, 0]] * 4), "B: contains NaN or Inf"),
    (np.zeros((0, 4)), GOOD_B, "A: empty"),
    (GOOD, np.zeros((4, 0)), "B: empty"),
    (GOOD.astype(complex), GOOD_B, "A: complex"),
    (np.array([[object()] * 4] * 3), GOOD_B, "A: object"),
    (GOOD.astype(bool), GOOD_B, "A: boolean"),
    (np.array([["a"] * 4] * 3), GOOD_B, "A: dtype <U1 is not a real numeric type"),
    (np.ones((3, 4, 1)), GOOD_B, "A: expected a 2-D matrix, got 3-D"),
    (np.ones(4), GOOD_B, "A: expected a 2-D matrix, got 1-D"),
    (GOOD, np.ones((5, 2)), "shape mismatch: A is 3x4, B is 5x2"),
    (np.full((3, 4), 2**62, dtype=np.int64), GOOD_B, "exceed 2\\^53"),
])
def test_bad_operands(A, B, match):
    with pytest.raises(InputError, match=match):
        LayeredMatmul(A, B)


@pytest.mark.parametrize("option, match", [
    ({"bits": 0}, "bits must be in 1..7, got 0"),
    ({"bits": 8}, "bits must be in 1..7, got 8"),
    ({"bits": 2.5}, "bits must be an integer"),
    ({"planes": 0}, "planes must be in 1..16, got 0"),
    ({"planes": 17}, "planes must be in 1..16, got 17"),
    ({"planes": True}, "planes must be an integer"),
    ({"order": "diagonal"}, "order must be one of antidiagonal, pairwise, lshape"),
    ({"cutoff": 0}, "cutoff must be in"),
    ({"scale": "col"}, "scale must be one of row, tensor"),
])
def test_bad_options(option, match):
    with pytest.raises(ConfigError, match=match):
        LayeredMatmul(GOOD, GOOD_B, **option)


def test_errors_are_also_builtin_value_errors():
    with pytest.raises(ValueError):
        LayeredMatmul(GOOD, np.ones((5, 2)))
