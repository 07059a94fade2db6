"""Build only: the Cython/C extension list and flags. Metadata lives in pyproject.toml."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# LRMPI_CYTHON_DEBUG=1 turns bounds and wraparound checks back on (and -O0 -g).
DEBUG = os.environ.get("LRMPI_CYTHON_DEBUG", "0") == "1"
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
}
# No -march: SIMD variants carry __attribute__((target)) and are picked at run
# time (ext/c/dispatch.c), so one build runs on every x86-64.
# -ffp-contract=off: no FMA may merge a rounding the invariants count (the fused
# layers' C + bias, the decode's scaling): results are the same bits on every ISA
CFLAGS = (["-O0", "-g"] if DEBUG else ["-O3", "-fno-strict-aliasing"]) + ["-ffp-contract=off"]
C_SOURCES = ["ext/c/ref.c", "ext/c/simd.c", "ext/c/igemm_x86.c", "ext/c/igemm_amx.c",
             "ext/c/decode_avx512.c", "ext/c/dispatch.c", "ext/c/dot2.c",
             "ext/c/crt.c", "ext/c/crt_avx512.c", "ext/c/crt_residues_avx512.c",
             "ext/c/acc_compact.c", "ext/c/encode_t_avx512.c", "ext/c/nn_ref.c", "ext/c/nn_x86.c",
             "ext/c/bound_pass.c"]

extensions = [
    Extension(
        "lrmpi._ext.kernels",
        ["ext/kernels.pyx", *C_SOURCES],
        include_dirs=["ext"],
        depends=["ext/c/kernels.h", "ext/c/gemm_internal.h", "ext/c/bodies.h", "ext/c/nn_body.h",
                 "ext/c/nn_cut.h", "ext/c/nn_epilogue.h", "ext/c/transpose.h", "ext/c/pow2.h",
                 "ext/_kernels.pxd"],
        extra_compile_args=CFLAGS,
    ),
]

setup(
    ext_modules=cythonize(extensions, include_path=["ext"], compiler_directives=DIRECTIVES),
)
