/* Fused inference layers, portable and AVX2 variants (nn_body.h): the level
 * sums by the ISA's int8 GEMM over plain weight rows, one call per pair. */
#include "nn_body.h"

static int64_t plain_size(int planes, int64_t opad, int64_t kpad)
{
    return planes * opad * kpad;
}

static void plain_pack(int planes, int64_t O, int64_t k, int64_t kpad, const int8_t *W,
                       int8_t *out)
{
    nn_pack_plain(planes, O, k, kpad, 0, W, out);
}

static double finish_ref(int act, int64_t O, double *restrict c, const double *restrict bias,
                         double *restrict res, const double *restrict slope, double lo,
                         double hi, double *restrict y, double *q)
{
    return nn_finish_row(act, O, c, bias, res, slope, lo, hi, y, q);
}

/* S_l = sum over p + q = l of A_p W_q^T through `gemm` (C += A Bt^T) */
LRMPI_INLINE void levels_by_gemm(lrmpi_igemm_fn gemm, int r, int64_t m, int64_t opad,
                                 int64_t kpad, const int8_t *A, int64_t lda, int64_t pa,
                                 const int8_t *W, int64_t wq, int32_t *S, int64_t lds,
                                 int64_t ls)
{
    for (int l = 0; l < 2 * r - 1; l++) {
        int32_t *Sl = S + l * ls;
        memset(Sl, 0, (size_t)(m * lds) * 4);
        for (int p = l < r ? 0 : l - r + 1; p <= l && p < r; p++)
            gemm(m, opad, kpad, A + p * pa, lda, W + (l - p) * wq, kpad, Sl, lds, 1);
    }
}

static void levels_ref(int r, int64_t m, int64_t mpad, int64_t opad, int64_t kpad,
                       const int8_t *A, int64_t lda, int64_t pa, const int8_t *W, int64_t wq,
                       int32_t *S, int64_t lds, int64_t ls)
{
    (void)mpad;
    levels_by_gemm(lrmpi_igemm_ref, r, m, opad, kpad, A, lda, pa, W, wq, S, lds, ls);
}

LRMPI_NN_VARIANT(ref, , levels_ref, lrmpi_decode_ref, finish_ref, plain_pack, plain_size, 0)

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static double finish_avx2(int act, int64_t O,
    double *restrict c, const double *restrict bias, double *restrict res,
    const double *restrict slope, double lo, double hi, double *restrict y, double *q)
{
    return nn_finish_row(act, O, c, bias, res, slope, lo, hi, y, q);
}

static void levels_avx2(int r, int64_t m, int64_t mpad, int64_t opad, int64_t kpad,
                        const int8_t *A, int64_t lda, int64_t pa, const int8_t *W, int64_t wq,
                        int32_t *S, int64_t lds, int64_t ls)
{
    (void)mpad;
    levels_by_gemm(lrmpi_igemm_avx2, r, m, opad, kpad, A, lda, pa, W, wq, S, lds, ls);
}

LRMPI_NN_VARIANT(avx2, __attribute__((target("avx2"))), levels_avx2, lrmpi_decode_ref,
                 finish_avx2, plain_pack, plain_size, 0)
#endif
