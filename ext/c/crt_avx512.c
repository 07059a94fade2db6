/* The CRT reconstruction (kernels.h, crt_reconstruct) on AVX-512: 8 entries of a
 * row per vector, the same integers and the same one rounding as the portable
 * version in crt.c (bit-identical results; tests compare both against Python
 * integers).
 *
 * Per entry: r_l = S_l mod m_l, V = sum_l r_l coef_l, N = V mod M in the
 * symmetric range, Y = fl(N) 2^-(erow + ecol). Phases:
 *   1. residues and the sums over the moduli in doubles: r_l <= 254 and the
 *      coefficients' 32-bit limbs a_lt < 2^32 give products < 2^40, and sums of
 *      at most 64 of them < 2^46, so every FMA is exact;
 *   2. V as three 64-bit words (top, hi, lo) from the four limb sums, with
 *      carries;
 *   3. V mod M: a quotient estimate q from doubles (V/M < 2^14; the estimate
 *      is the floor or off by one, lowered by one so that q M <= V), V - q M by
 *      words with borrows, then at most two conditional subtractions of M;
 *   4. the symmetric residue's magnitude as a 128-bit integer, rounded once to
 *      double: normalised so that its top bit is bit 63, the bits below the 64
 *      kept folded into a sticky bit (below the rounding position), converted by
 *      the hardware (round to nearest even, as __floatuntidf);
 *   5. the power-of-two scaling by one multiplication when 2^-(erow+ecol) is a
 *      normal number (as crt.c's scale2), per lane in scalar code otherwise. */
#pragma GCC optimize("fp-contract=off")
#include <immintrin.h>
#include <math.h>
#include "kernels.h"
#include "pow2.h"

#define AVX512 __attribute__((target("avx512f,avx512dq,avx512cd,avx512bw,avx512vl")))
#define LANES 8

typedef struct { __m512i top, hi, lo; } u192v;

/* (top, hi, lo) = a0 + a1 2^32 + a2 2^64 + a3 2^96 for lane words a_t < 2^47 */
AVX512 static inline u192v combine(__m512i a0, __m512i a1, __m512i a2, __m512i a3)
{
    u192v v;
    const __m512i t1 = _mm512_slli_epi64(a1, 32);
    v.lo = _mm512_add_epi64(a0, t1);
    const __m512i c0 = _mm512_maskz_set1_epi64(_mm512_cmplt_epu64_mask(v.lo, a0), 1);
    const __m512i h1 = _mm512_add_epi64(_mm512_add_epi64(_mm512_srli_epi64(a1, 32), a2), c0);
    const __m512i t3 = _mm512_slli_epi64(a3, 32);
    v.hi = _mm512_add_epi64(h1, t3);
    const __m512i c1 = _mm512_maskz_set1_epi64(_mm512_cmplt_epu64_mask(v.hi, t3), 1);
    v.top = _mm512_add_epi64(_mm512_srli_epi64(a3, 32), c1);
    return v;
}

/* a - b by words; the caller knows a >= b */
AVX512 static inline u192v sub192(u192v a, u192v b)
{
    u192v d;
    const __mmask8 b0 = _mm512_cmplt_epu64_mask(a.lo, b.lo);
    d.lo = _mm512_sub_epi64(a.lo, b.lo);
    const __m512i hi1 = _mm512_sub_epi64(a.hi, b.hi);
    const __mmask8 b1 = _mm512_cmplt_epu64_mask(a.hi, b.hi) |
                        (_mm512_cmpeq_epi64_mask(a.hi, b.hi) & b0);
    d.hi = _mm512_mask_sub_epi64(hi1, b0, hi1, _mm512_set1_epi64(1));
    d.top = _mm512_mask_sub_epi64(_mm512_sub_epi64(a.top, b.top), b1, _mm512_sub_epi64(a.top, b.top),
                                  _mm512_set1_epi64(1));
    return d;
}

/* lanes where a >= b */
AVX512 static inline __mmask8 ge192(u192v a, u192v b)
{
    const __mmask8 gt_top = _mm512_cmpgt_epu64_mask(a.top, b.top);
    const __mmask8 eq_top = _mm512_cmpeq_epi64_mask(a.top, b.top);
    const __mmask8 gt_hi = _mm512_cmpgt_epu64_mask(a.hi, b.hi);
    const __mmask8 eq_hi = _mm512_cmpeq_epi64_mask(a.hi, b.hi);
    const __mmask8 ge_lo = _mm512_cmpge_epu64_mask(a.lo, b.lo);
    return gt_top | (eq_top & (gt_hi | (eq_hi & ge_lo)));
}

AVX512 static inline u192v select192(__mmask8 k, u192v a, u192v b)  /* k ? b : a */
{
    u192v v;
    v.top = _mm512_mask_mov_epi64(a.top, k, b.top);
    v.hi = _mm512_mask_mov_epi64(a.hi, k, b.hi);
    v.lo = _mm512_mask_mov_epi64(a.lo, k, b.lo);
    return v;
}

/* fl(hi 2^64 + lo), correctly rounded (to nearest, ties to even) */
AVX512 static inline __m512d u128_to_double(__m512i hi, __m512i lo)
{
    const __mmask8 small = _mm512_cmpeq_epi64_mask(hi, _mm512_setzero_si512());
    const __m512i s = _mm512_lzcnt_epi64(hi);                       /* 0..63 where hi != 0 */
    const __m512i x = _mm512_or_si512(_mm512_sllv_epi64(hi, s),
                                      _mm512_srlv_epi64(lo, _mm512_sub_epi64(_mm512_set1_epi64(64), s)));
    const __m512i rest = _mm512_sllv_epi64(lo, s);                  /* bits below x */
    const __m512i sticky = _mm512_maskz_set1_epi64(
        _mm512_test_epi64_mask(rest, rest), 1);
    /* 2^(64 - s) as a double: exponent field (1023 + 64 - s) << 52 */
    const __m512i e = _mm512_slli_epi64(_mm512_sub_epi64(_mm512_set1_epi64(1023 + 64), s), 52);
    const __m512d big = _mm512_mul_pd(_mm512_cvtepu64_pd(_mm512_or_si512(x, sticky)),
                                      _mm512_castsi512_pd(e));
    return _mm512_mask_mov_pd(big, small, _mm512_cvtepu64_pd(lo));
}

AVX512 void lrmpi_crt_reconstruct_avx512(int64_t m, int64_t n, int nmod, const int32_t *moduli,
                                         const int32_t *S, int64_t splane, const uint64_t *coef,
                                         const uint64_t *Mw, const int32_t *erow,
                                         const int32_t *ecol, double *Y, int64_t ldy,
                                         double *amax)
{
    if (m <= 0 || n <= 0) {
        if (amax) *amax = 0.0;
        return;
    }
    double md[64], inv[64], limb[64][4];
    for (int l = 0; l < nmod; l++) {
        md[l] = (double)moduli[l];
        inv[l] = 1.0 / md[l];
        limb[l][0] = (double)(coef[2 * l] & 0xffffffffu);
        limb[l][1] = (double)(coef[2 * l] >> 32);
        limb[l][2] = (double)(coef[2 * l + 1] & 0xffffffffu);
        limb[l][3] = (double)(coef[2 * l + 1] >> 32);
    }
    /* M, (M - 1) / 2, and 1/M (rounded) */
    u192v Mv, halfM;
    Mv.top = _mm512_setzero_si512();
    Mv.hi = _mm512_set1_epi64((long long)Mw[1]);
    Mv.lo = _mm512_set1_epi64((long long)Mw[0]);
    halfM.top = _mm512_setzero_si512();
    halfM.hi = _mm512_set1_epi64((long long)(Mw[1] >> 1));
    halfM.lo = _mm512_set1_epi64((long long)((Mw[0] >> 1) | (Mw[1] << 63)));
    const __m512i m0 = _mm512_set1_epi64((long long)(Mw[0] & 0xffffffffu));
    const __m512i m1 = _mm512_set1_epi64((long long)(Mw[0] >> 32));
    const __m512i m2 = _mm512_set1_epi64((long long)(Mw[1] & 0xffffffffu));
    const __m512i m3 = _mm512_set1_epi64((long long)(Mw[1] >> 32));
    const double Md = (double)Mw[1] * 0x1p64 + (double)Mw[0];
    const __m512d invM = _mm512_set1_pd(1.0 / Md);
    const __m512d two64 = _mm512_set1_pd(0x1p64), two128 = _mm512_set1_pd(0x1p128);
    const __m512d absmask = _mm512_castsi512_pd(_mm512_set1_epi64(0x7fffffffffffffffLL));
    __m512d vmax = _mm512_setzero_pd();
    double smax = 0.0;

    for (int64_t i = 0; i < m; i++) {
        const int ei = erow[i];
        for (int64_t j = 0; j < n; j += LANES) {
            const int64_t w = n - j < LANES ? n - j : LANES;
            const __mmask8 k = (__mmask8)((1u << w) - 1);
            /* 1. r_l and the limb sums */
            __m512d acc0 = _mm512_setzero_pd(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (int l = 0; l < nmod; l++) {
                const __m256i s = _mm256_maskz_loadu_epi32(k, S + l * splane + i * n + j);
                const __m512d x = _mm512_cvtepi32_pd(s);
                const __m512d mm = _mm512_set1_pd(md[l]);
                const __m512d q = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(inv[l])),
                                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                __m512d r = _mm512_fnmadd_pd(q, mm, x);   /* exact: an integer, |r| <= m */
                r = _mm512_mask_add_pd(r, _mm512_cmp_pd_mask(r, _mm512_setzero_pd(), _CMP_LT_OQ),
                                       r, mm);
                r = _mm512_mask_sub_pd(r, _mm512_cmp_pd_mask(r, mm, _CMP_GE_OQ), r, mm);
                acc0 = _mm512_fmadd_pd(r, _mm512_set1_pd(limb[l][0]), acc0);
                acc1 = _mm512_fmadd_pd(r, _mm512_set1_pd(limb[l][1]), acc1);
                acc2 = _mm512_fmadd_pd(r, _mm512_set1_pd(limb[l][2]), acc2);
                acc3 = _mm512_fmadd_pd(r, _mm512_set1_pd(limb[l][3]), acc3);
            }
            /* 2. V in three words */
            const u192v V = combine(_mm512_cvtpd_epu64(acc0), _mm512_cvtpd_epu64(acc1),
                                    _mm512_cvtpd_epu64(acc2), _mm512_cvtpd_epu64(acc3));
            /* 3. V mod M */
            const __m512d Vd = _mm512_add_pd(
                _mm512_add_pd(_mm512_mul_pd(_mm512_cvtepu64_pd(V.top), two128),
                              _mm512_mul_pd(_mm512_cvtepu64_pd(V.hi), two64)),
                _mm512_cvtepu64_pd(V.lo));
            __m512d qd = _mm512_roundscale_pd(_mm512_mul_pd(Vd, invM),
                                              _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
            qd = _mm512_max_pd(_mm512_sub_pd(qd, _mm512_set1_pd(1.0)), _mm512_setzero_pd());
            const __m512i q = _mm512_cvtpd_epu64(qd);
            const u192v qM = combine(_mm512_mul_epu32(q, m0), _mm512_mul_epu32(q, m1),
                                     _mm512_mul_epu32(q, m2), _mm512_mul_epu32(q, m3));
            u192v R = sub192(V, qM);
            R = select192(ge192(R, Mv), R, sub192(R, Mv));
            R = select192(ge192(R, Mv), R, sub192(R, Mv));
            /* 4. the symmetric residue: -(M - R) above (M - 1) / 2 */
            const __mmask8 neg = ~ge192(halfM, R) & 0xff;
            const u192v negR = sub192(Mv, R);
            const u192v mag = select192(neg, R, negR);
            __m512d v = u128_to_double(mag.hi, mag.lo);
            v = _mm512_mask_sub_pd(v, neg, _mm512_setzero_pd(), v);
            /* 5. scaling by 2^-(erow + ecol) */
            const __m512i ej = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(k, ecol + j));
            const __m512i E = _mm512_sub_epi64(_mm512_set1_epi64(-(long long)ei), ej);
            const __mmask8 normal = _mm512_cmpge_epi64_mask(E, _mm512_set1_epi64(-1022)) &
                                    _mm512_cmple_epi64_mask(E, _mm512_set1_epi64(1023));
            const __m512d p2 = _mm512_castsi512_pd(
                _mm512_slli_epi64(_mm512_add_epi64(E, _mm512_set1_epi64(1023)), 52));
            v = _mm512_mul_pd(v, p2);
            double *y = Y + i * ldy + j;
            _mm512_mask_storeu_pd(y, k & normal, v);
            vmax = _mm512_mask_max_pd(vmax, k & normal, vmax, _mm512_and_pd(v, absmask));
            if ((k & ~normal) & 0xff) {  /* below or above the normal range: as crt.c */
                double un[LANES];
                _mm512_storeu_pd(un, u128_to_double(mag.hi, mag.lo));
                for (int t = 0; t < w; t++) {
                    if (!((~normal >> t) & 1)) continue;
                    const int e = -(ei + ecol[j + t]);
                    const double u = ((neg >> t) & 1) ? -un[t] : un[t];
                    y[t] = ldexp(u, e);
                    if (fabs(y[t]) > smax) smax = fabs(y[t]);
                }
            }
        }
    }
    if (amax) {
        const double vm = _mm512_reduce_max_pd(vmax);
        *amax = vm > smax ? vm : smax;
    }
}
