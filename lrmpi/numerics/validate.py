"""Validation of operands and options: one clear error per problem."""
import numpy as np

from lrmpi.errors import ConfigError, InputError

MAX_BITS = 7      # digits must fit int8: |d| <= 2^bits - 1 <= 127
MAX_PLANES = 16   # 16 x 7 bits = 112 bits, far past float64's 53
SCALES = ("row", "tensor")
EXACT_INT = 2**53  # integers beyond this are not exact in float64


def operand(X, name):
    """Return X as a finite, non-empty 2-D float64 C-contiguous array, or raise InputError."""
    X = np.asarray(X) if not isinstance(X, np.ndarray) else X
    if X.dtype == object:
        raise InputError(f"{name}: object arrays are not supported (need a real numeric dtype)")
    if X.dtype == bool:
        raise InputError(f"{name}: boolean arrays are not supported (need a real numeric dtype)")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise InputError(f"{name}: complex dtype {X.dtype} is not supported (real numbers only)")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise InputError(f"{name}: dtype {X.dtype} is not a real numeric type")
    if X.ndim != 2:
        raise InputError(f"{name}: expected a 2-D matrix, got {X.ndim}-D shape {X.shape}")
    if X.size == 0:
        raise InputError(f"{name}: empty matrix of shape {X.shape}")
    if np.issubdtype(X.dtype, np.floating) and X.dtype.itemsize > 8:  # long double
        X64 = X.astype(np.float64)
        lost = ~((X64.astype(X.dtype) == X) | np.isnan(X))
        if lost.any():
            i, j = np.argwhere(lost)[0]
            raise InputError(f"{name}: {X.dtype} entries such as {name}[{i}, {j}] are not "
                             "float64 values (lrmpi multiplies float64 numbers exactly); "
                             "convert the operand to float64 first")
        X = X64
    if np.issubdtype(X.dtype, np.integer):
        big = np.abs(X.astype(np.float64)).max()
        if big > EXACT_INT:
            raise InputError(f"{name}: integer entries up to {big:.3g} exceed 2^53 and "
                             "are not exact in float64")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.dtype.byteorder not in "=|":
        X = X.astype(np.float64)
    return X


def finite(flag, name):
    """Raise if the kernel flagged NaN/Inf in operand `name`."""
    if flag:
        raise InputError(f"{name}: contains NaN or Inf")


def shapes(A, B):
    if A.shape[1] != B.shape[0]:
        raise InputError(f"shape mismatch: A is {A.shape[0]}x{A.shape[1]}, B is "
                         f"{B.shape[0]}x{B.shape[1]} (A's columns must equal B's rows)")


def _integer(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in {lo}..{hi}, got {value}")
    return int(value)


def bits(value):
    return _integer(value, "bits", 1, MAX_BITS)


def planes(value):
    return _integer(value, "planes", 1, MAX_PLANES)


def cutoff(value):
    """None (no cut-off) or a level >= 1."""
    if value is None:
        return None
    return _integer(value, "cutoff", 1, 2 * MAX_PLANES)


def scale(value):
    if value not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)}; got {value!r}")
    return value


def final(value):
    """The final resolution's method: None (the layers only) or "crt"."""
    if value in (None, "none", "planes"):
        return None
    if value != "crt":
        raise ConfigError(f"final must be 'crt' or none, got {value!r}")
    return "crt"
