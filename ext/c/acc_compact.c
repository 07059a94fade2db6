/* Exact accumulation in a compact state, added and decoded in one pass (kernels.h,
 * acc_update; lrmpi/numerics/accumulate.py chooses it when it is exact).
 *
 * The exact integer N of an entry is held as F = fl(N) (a double: N rounded to
 * nearest, an integer) and E = N - F (int32, exact): 12 bytes instead of three
 * 32-bit limbs in int64 (24). Adding X = S 2^shift (exact as a double: |S| < 2^53):
 *
 *     s + t = F + X          TwoSum: s = fl(F + X), t the exact error
 *     u     = t + E          exact: both are integers below 2^34 in magnitude
 *     F'    = fl(s + u)      one correctly rounded addition of the exact N' = s + u
 *     E'    = s + u - F'     TwoSum again: exact, |E'| <= ulp(F')/2
 *
 * so F' = fl(N') exactly as the limbs' decode rounds it. The caller guarantees
 * |N| < 2^84 for every partial sum (then |E| < 2^31, |t| < 2^34, and every step
 * above is exact); a job whose sums could be larger keeps the limbs.
 *
 * Decoding: Y = fl(N 2^e) with e = erow[i] + ecol[j] + base. Rounding commutes with
 * scaling by a power of two while the result stays normal (and overflows to inf at
 * the same point), so Y = F 2^e exactly (vscalefpd, or ldexp); entries whose result
 * would be subnormal are rounded once from N = F + E itself (ref.c's decode of
 * limbs): the same bits as the limbs' decode everywhere.
 *
 * No contraction into FMAs: TwoSum needs every addition rounded on its own.
 */
#pragma GCC optimize("fp-contract=off")
#include <math.h>
#include "kernels.h"

/* Y = fl((F + E) 2^e), rounded once (subnormal results): through 32-bit limbs */
static double decode_exact(double f, int32_t e32, int e)
{
    __int128 v = (__int128)f + e32; /* f is an integer below 2^84: exact */
    int64_t w[4];
    for (int l = 0; l < 3; l++)
        w[l] = (int64_t)((v >> (32 * l)) & 0xFFFFFFFF);
    w[3] = (int64_t)(v >> 96);
    double y;
    lrmpi_decode_ref(1, 1, w, 0, 1, 4, NULL, NULL, e, &y, 1, NULL);
    return y;
}

static inline double s_at(const void *S, int s32, int64_t idx)
{
    return s32 ? (double)((const int32_t *)S)[idx] : (double)((const int64_t *)S)[idx];
}

void lrmpi_acc_update_ref(int64_t m, int64_t n, double *F, int32_t *E, int64_t ldf,
                          const void *S, int s32, int64_t lds, int shift,
                          const int32_t *erow, const int32_t *ecol, int base,
                          double *Y, int64_t ldy, double *amax)
{
    const double p2 = ldexp(1.0, shift);
    double big = 0.0;
    for (int64_t i = 0; i < m; i++) {
        double *f = F ? F + i * ldf : NULL;
        int32_t *e = F ? E + i * ldf : NULL;
        const int er = base + (erow ? erow[i] : 0);
        for (int64_t j = 0; j < n; j++) {
            double f2 = f ? f[j] : 0.0;
            int32_t e2 = f ? e[j] : 0;
            if (S) {
                const double x = s_at(S, s32, i * lds + j) * p2;
                const double s = f2 + x, bp = s - f2;
                const double t = (f2 - (s - bp)) + (x - bp);
                const double u = t + (double)e2;
                f2 = s + u;
                const double bq = f2 - s;
                e2 = (int32_t)((s - (f2 - bq)) + (u - bq));
                if (f) {
                    f[j] = f2;
                    e[j] = e2;
                }
            }
            if (!Y)
                continue;
            const int et = er + (ecol ? ecol[j] : 0);
            double y;
            if (f2 != 0.0 && ilogb(f2) + (int64_t)et < -1022)
                y = decode_exact(f2, e2, et);
            else /* exact, or +-inf where the rounding of N 2^e overflows */
                y = ldexp(f2, et < -2200 ? -2200 : et > 2200 ? 2200 : et);
            Y[i * ldy + j] = y;
            big = fabs(y) > big ? fabs(y) : big;
        }
    }
    if (amax)
        *amax = big;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

AVX512 void lrmpi_acc_update_avx512(int64_t m, int64_t n, double *F, int32_t *E,
                                    int64_t ldf, const void *S, int s32, int64_t lds,
                                    int shift, const int32_t *erow, const int32_t *ecol,
                                    int base, double *Y, int64_t ldy, double *amax)
{
    const __m512d p2 = _mm512_set1_pd(ldexp(1.0, shift));
    const __m512d zero = _mm512_setzero_pd(), tmin = _mm512_set1_pd(-1022.0);
    const __m512d emin = _mm512_set1_pd(-2200.0), emax = _mm512_set1_pd(2200.0);
    __m512d big = zero;
    double slow_big = 0.0;
    for (int64_t i = 0; i < m; i++) {
        double *f = F ? F + i * ldf : NULL;
        int32_t *e = F ? E + i * ldf : NULL;
        const int er = base + (erow ? erow[i] : 0);
        const __m512d erv = _mm512_set1_pd((double)er);
        for (int64_t j = 0; j < n; j += 8) {
            const __mmask8 live = n - j >= 8 ? 0xFF : (__mmask8)((1u << (n - j)) - 1);
            __m512d f2 = f ? _mm512_maskz_loadu_pd(live, f + j) : zero;
            __m256i e2 = f ? _mm256_maskz_loadu_epi32(live, e + j) : _mm256_setzero_si256();
            if (S) {
                const __m512d sv = s32
                    ? _mm512_cvtepi32_pd(_mm256_maskz_loadu_epi32(
                          live, (const int32_t *)S + i * lds + j))
                    : _mm512_cvtepi64_pd(_mm512_maskz_loadu_epi64(
                          live, (const int64_t *)S + i * lds + j));
                const __m512d x = _mm512_mul_pd(sv, p2);
                const __m512d s = _mm512_add_pd(f2, x), bp = _mm512_sub_pd(s, f2);
                const __m512d t = _mm512_add_pd(_mm512_sub_pd(f2, _mm512_sub_pd(s, bp)),
                                                _mm512_sub_pd(x, bp));
                const __m512d u = _mm512_add_pd(t, _mm512_cvtepi32_pd(e2));
                f2 = _mm512_add_pd(s, u);
                const __m512d bq = _mm512_sub_pd(f2, s);
                const __m512d ed = _mm512_add_pd(_mm512_sub_pd(s, _mm512_sub_pd(f2, bq)),
                                                 _mm512_sub_pd(u, bq));
                e2 = _mm512_cvtpd_epi32(ed); /* an integer: exact */
                if (f) {
                    _mm512_mask_storeu_pd(f + j, live, f2);
                    _mm256_mask_storeu_epi32(e + j, live, e2);
                }
            }
            if (!Y)
                continue;
            __m512d et = erv;
            if (ecol)
                et = _mm512_add_pd(et, _mm512_cvtepi32_pd(
                                           _mm256_maskz_loadu_epi32(live, ecol + j)));
            /* the result's exponent: getexp(0) is -inf, so zeros are fast */
            const __mmask8 fast =
                live & _mm512_cmp_pd_mask(_mm512_add_pd(_mm512_getexp_pd(f2), et), tmin,
                                          _CMP_GE_OQ);
            const __m512d y = _mm512_scalef_pd(f2, _mm512_min_pd(_mm512_max_pd(et, emin), emax));
            _mm512_mask_storeu_pd(Y + i * ldy + j, fast, y);
            big = _mm512_mask_max_pd(big, fast, big, _mm512_abs_pd(y));
            __mmask8 slow = live & ~fast;
            if (slow) {
                double fs[8], es[8];
                int32_t ei[8];
                _mm512_storeu_pd(fs, f2);
                _mm512_storeu_pd(es, et);
                _mm256_storeu_si256((__m256i *)ei, e2);
                while (slow) {
                    const int b = __builtin_ctz(slow);
                    slow &= (__mmask8)(slow - 1);
                    const double yb = decode_exact(fs[b], ei[b], (int)es[b]);
                    Y[i * ldy + j + b] = yb;
                    slow_big = fabs(yb) > slow_big ? fabs(yb) : slow_big;
                }
            }
        }
    }
    if (amax) {
        const double v = _mm512_reduce_max_pd(big);
        *amax = v > slow_big ? v : slow_big;
    }
}

#endif
