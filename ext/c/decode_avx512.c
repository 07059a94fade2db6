/* decode on AVX-512: 8 elements per step, the same results bit for
 * bit as ref.c (tested against it and against exact Python integers).
 *
 * decode, for <= 4 carry-save limbs (|N| < 2^126, kernels.h): the limbs are
 * summed modulo 2^128 into a (hi, lo) pair of int64 lanes, the magnitude's top
 * 64 bits are taken with every lower bit ORed into the last one ("round to
 * odd"), converted to double with round-to-nearest (vcvtuqq2pd), and scaled by
 * an exact power of two. Rounding to odd at 64 bits, then to nearest at 53,
 * equals one rounding to nearest (64 >= 53 + 2), so this is the correctly
 * rounded value whenever the result is a normal double. Lanes whose scale
 * could leave the normal range (subnormal or overflowing results, where ref.c
 * rounds once at the final exponent) go through ref.c one by one.
 *
 * Measured at 512 x 4096, 3 limbs: ~50 ms for ref.c's scalar 128-bit path.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include "kernels.h"

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512cd")))

AVX512 void lrmpi_decode_avx512(int64_t m, int64_t n, const int64_t *L, int64_t ldl,
                                int64_t lstride, int nlimbs, const int32_t *erow,
                                const int32_t *ecol, int base, double *Y, int64_t ldy,
                                double *amax)
{
    if (nlimbs > 4 || nlimbs < 1) {
        lrmpi_decode_ref(m, n, L, ldl, lstride, nlimbs, erow, ecol, base, Y, ldy, amax);
        return;
    }
    __m512d big = _mm512_setzero_pd(); /* max |y| of the fast lanes */
    double slow_big = 0.0;             /* ... and of the others */
    const __m512i low32 = _mm512_set1_epi64(0xFFFFFFFFll), zero = _mm512_setzero_si512();
    const __m512i one = _mm512_set1_epi64(1), c64 = _mm512_set1_epi64(64);
    const __m512i bias = _mm512_set1_epi64(1023);
    const __m512i tmin = _mm512_set1_epi64(-1022), tmax = _mm512_set1_epi64(959);
    const __m512i signbit = _mm512_set1_epi64((long long)0x8000000000000000ull);
    for (int64_t i = 0; i < m; i++) {
        const int64_t *row = L + i * ldl;
        const int er = base + (erow ? erow[i] : 0);
        for (int64_t j = 0; j < n; j += 8) {
            const __mmask8 live = n - j >= 8 ? 0xFF : (__mmask8)((1u << (n - j)) - 1);
            const __m512i w0 = _mm512_maskz_loadu_epi64(live, row + j);
            const int64_t *r1 = row + lstride + j, *r2 = r1 + lstride, *r3 = r2 + lstride;
            const __m512i w1 = nlimbs > 1 ? _mm512_maskz_loadu_epi64(live, r1) : zero;
            const __m512i w2 = nlimbs > 2 ? _mm512_maskz_loadu_epi64(live, r2) : zero;
            const __m512i w3 = nlimbs > 3 ? _mm512_maskz_loadu_epi64(live, r3) : zero;
            /* N = w0 + w1 2^32 + w2 2^64 + w3 2^96 modulo 2^128, as hi 2^64 + lo */
            const __m512i lo = _mm512_add_epi64(
                w0, _mm512_slli_epi64(_mm512_and_si512(w1, low32), 32));
            const __mmask8 carry = _mm512_cmplt_epu64_mask(lo, w0);
            const __mmask8 w0neg = _mm512_cmplt_epi64_mask(w0, zero);
            __m512i hi = _mm512_add_epi64(_mm512_srai_epi64(w1, 32),
                                          _mm512_add_epi64(w2, _mm512_slli_epi64(w3, 32)));
            hi = _mm512_mask_add_epi64(hi, carry, hi, one);
            hi = _mm512_mask_sub_epi64(hi, w0neg, hi, one);
            /* magnitude: negate (hi, lo) where negative */
            const __mmask8 neg = _mm512_cmplt_epi64_mask(hi, zero);
            const __m512i nlo = _mm512_sub_epi64(zero, lo);
            __m512i nhi = _mm512_xor_si512(hi, _mm512_set1_epi64(-1));
            nhi = _mm512_mask_add_epi64(nhi, _mm512_cmpeq_epi64_mask(lo, zero), nhi, one);
            const __m512i ulo = _mm512_mask_mov_epi64(lo, neg, nlo);
            const __m512i uhi = _mm512_mask_mov_epi64(hi, neg, nhi);
            /* top 64 bits of the magnitude, rounded to odd; nb = bit length of uhi */
            const __m512i nb = _mm512_sub_epi64(c64, _mm512_lzcnt_epi64(uhi));
            const __m512i up = _mm512_sub_epi64(c64, nb);
            __m512i top = _mm512_or_si512(_mm512_sllv_epi64(uhi, up), _mm512_srlv_epi64(ulo, nb));
            const __mmask8 sticky = _mm512_test_epi64_mask(_mm512_sllv_epi64(ulo, up),
                                                           _mm512_sllv_epi64(ulo, up));
            top = _mm512_mask_or_epi64(top, sticky, top, one);
            const __m512d x = _mm512_cvt_roundepu64_pd(top, _MM_FROUND_TO_NEAREST_INT |
                                                                _MM_FROUND_NO_EXC);
            /* scale by 2^t, t = nb + exponent: exact where the result stays normal */
            __m512i t = _mm512_add_epi64(nb, _mm512_set1_epi64(er));
            if (ecol)
                t = _mm512_add_epi64(t, _mm512_cvtepi32_epi64(
                                            _mm256_maskz_loadu_epi32(live, ecol + j)));
            const __mmask8 fast =
                _mm512_cmpge_epi64_mask(t, tmin) & _mm512_cmple_epi64_mask(t, tmax);
            const __m512d p2 =
                _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(t, bias), 52));
            __m512d y = _mm512_mul_pd(x, p2);
            y = _mm512_castsi512_pd(_mm512_mask_or_epi64(_mm512_castpd_si512(y), neg,
                                                         _mm512_castpd_si512(y), signbit));
            _mm512_mask_storeu_pd(Y + i * ldy + j, live & fast, y);
            big = _mm512_mask_max_pd(big, live & fast, big, _mm512_abs_pd(y));
            /* zeros are exact whatever t is; the other slow lanes: ref.c */
            __mmask8 slow = live & ~fast & ~_mm512_cmpeq_epi64_mask(top, zero);
            _mm512_mask_storeu_pd(Y + i * ldy + j, live & ~fast & ~slow, _mm512_setzero_pd());
            while (slow) {
                const int b = __builtin_ctz(slow);
                slow &= (__mmask8)(slow - 1);
                double yb;
                lrmpi_decode_ref(1, 1, row + j + b, ldl, lstride, nlimbs, NULL, NULL,
                                 er + (ecol ? ecol[j + b] : 0), Y + i * ldy + j + b, ldy, &yb);
                slow_big = yb > slow_big ? yb : slow_big;
            }
        }
    }
    if (amax) {
        const double v = _mm512_reduce_max_pd(big);
        *amax = v > slow_big ? v : slow_big;
    }
}

#endif
