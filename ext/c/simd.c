/* SIMD variants: the shared bodies compiled for wider ISAs.
 *
 * Each function carries __attribute__((target(...))) instead of per-file
 * compiler flags, so the build never needs -march and the module imports on
 * any x86-64; dispatch.c only calls a variant the CPU reports (CPUID).
 */
#include "kernels.h"
#include "bodies.h"

#if defined(__x86_64__) || defined(__i386__)
#define AVX2 __attribute__((target("avx2")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

/* colmax and encode_t: loops along rows of B that GCC vectorizes; no FMA in the
 * target lists, so no contraction can change a digit (encode_t on AVX-512:
 * encode_t_avx512.c) */
AVX2 int lrmpi_colmax_avx2(int64_t m, int64_t n, const double *X, int64_t ldx, double *amax)
{
    return colmax_body(m, n, X, ldx, amax);
}

AVX2 void lrmpi_encode_t_avx2(int64_t k, int64_t n, const double *X, int64_t ldx,
                              const int32_t *exps, int bits, int planes, int8_t *D,
                              int64_t ldd, int64_t *sumsq, double *l1)
{
    encode_t_body(k, n, X, ldx, exps, bits, planes, D, ldd, sumsq, l1);
}

AVX512 int lrmpi_colmax_avx512(int64_t m, int64_t n, const double *X, int64_t ldx,
                               double *amax)
{
    return colmax_body(m, n, X, ldx, amax);
}

AVX512 int lrmpi_rowmax_avx512(int64_t m, int64_t n, const double *X,
                               int64_t ldx, double *amax)
{
    return rowmax_body(m, n, X, ldx, amax);
}

AVX512 void lrmpi_encode_avx512(int64_t m, int64_t n, const double *X,
                                int64_t ldx, const int32_t *exps, int bits,
                                int planes, int8_t *D, int64_t *sumsq,
                                double *l1)
{
    encode_body(m, n, X, ldx, exps, bits, planes, D, sumsq, l1);
}

AVX512 void lrmpi_acc_add_avx512(int64_t m, int64_t n, int64_t *L, int64_t ldl,
                                 int64_t lstride, int nlimbs, const void *S, int s32,
                                 int64_t lds, int shift)
{
    acc_add_body(m, n, L, ldl, lstride, nlimbs, S, s32, lds, shift);
}

/* igemm variants: packed, register-blocked micro-kernels in igemm_x86.c */
#endif
