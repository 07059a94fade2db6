/* The CRT resolution (Ozaki scheme II): residues of integer-scaled operands and
 * the exact reconstruction of the product from its residue products (kernels.h).
 *
 * Portable C, one version for every ISA: the int8 GEMMs between the two steps do
 * the heavy work; these are O(m k) and O(m n N) passes. All integer arithmetic is
 * exact (int64, unsigned __int128 and a third 64-bit limb); the only rounding is
 * the conversion of each reconstructed integer to double (correctly rounded by
 * the compiler's __floatuntidf) and the power-of-two scaling after it.
 *
 * target_clones: GCC compiles each function for AVX-512, AVX2 and baseline x86-64
 * and the loader picks one for the CPU (ifunc); the integer results are the same
 * in every version (exact arithmetic; the quotient estimates are corrected). */
#pragma GCC optimize("fp-contract=off")
#include <math.h>
#include "kernels.h"

typedef unsigned __int128 u128;

/* x mod m in [0, m) for |x| < 2^50 held as a double, m odd < 2^31. The
 * quotient x/m rounded to nearest by the 1.5 2^52 trick (no libm call), off by
 * at most one, so the remainder is in (-3m/2, 3m/2); the corrections are
 * branch-free integer masks: residues are random, and branches on them were
 * mispredicted half the time (900 cycles an entry in the reconstruction). */
#define ROUND_MAGIC 6755399441055744.0  /* 1.5 2^52 */
static inline int32_t mod_pos(double x, double m, double inv_m, int32_t mi)
{
    const double q = (x * inv_m + ROUND_MAGIC) - ROUND_MAGIC;
    int32_t r = (int32_t)(x - q * m);  /* exact: |q m| < 2^51, |r| < 2^31 */
    r += (r >> 31) & mi;               /* r < 0: + m (twice at most) */
    r += (r >> 31) & mi;
    r -= ((mi - 1 - r) >> 31) & mi;    /* r >= m: - m */
    return r;
}

/* The symmetric residue in [-(m-1)/2, (m-1)/2] (m odd): mod_pos, then - m above
 * (m-1)/2. */
static inline int32_t mod_sym(double x, double m, double inv_m, int32_t mi)
{
    const int32_t r = mod_pos(x, m, inv_m, mi);
    return r - ((((mi - 1) >> 1) - r) >> 31 & mi);
}

/* 2^e as a double for -1022 <= e <= 1023 (a normal number), built from its bits:
 * multiplying by it rounds exactly as ldexp does, without the call. */
static inline double pow2(int e)
{
    union { uint64_t u; double d; } b;
    b.u = (uint64_t)(e + 1023) << 52;
    return b.d;
}

/* ldexp(v, e), by one multiplication when 2^e is a normal double */
static inline double scale2(double v, int e)
{
    return (e >= -1022 && e <= 1023) ? v * pow2(e) : ldexp(v, e);
}

#define ROW_CHUNK 512  /* columns per pass of the residue loop (stack buffers) */

/* One row of X' (elements x[c sc], scaled by 2^e): its residues into R[l plane + c]
 * and the saturating sum of its |X'| (kernels.h, crt_residues). Also the AVX-512
 * version's path for rows whose 2^e is not a normal double. */
__attribute__((target_clones("avx512f", "avx2", "default")))
void lrmpi_crt_residue_row(int64_t k, const double *x, int64_t sc, int e, int nmod,
                           const int32_t *moduli, int8_t *R, int64_t plane, int64_t *l1)
{
    double md[64], inv[64], c32[64];
    double hid[ROW_CHUNK], lod[ROW_CHUNK];
    for (int l = 0; l < nmod; l++) {
        md[l] = (double)moduli[l];
        inv[l] = 1.0 / md[l];
        c32[l] = (double)(((int64_t)1 << 32) % moduli[l]);
    }
    uint64_t sum = 0;  /* sum |X'[i,:]| < k 2^63 could overflow: saturate */
    for (int64_t c0 = 0; c0 < k; c0 += ROW_CHUNK) {
        const int64_t w = k - c0 < ROW_CHUNK ? k - c0 : ROW_CHUNK;
        for (int64_t c = 0; c < w; c++) {
            const double v = x[(c0 + c) * sc];
            const int64_t xi = (int64_t)trunc(scale2(v, e));  /* |xi| < 2^63 (caller) */
            const uint64_t ax = (uint64_t)(xi < 0 ? -xi : xi);
            sum = (sum + ax < sum) ? UINT64_MAX : sum + ax;
            /* xi = hi 2^32 + lo, |hi| < 2^31, 0 <= lo < 2^32 */
            const int64_t hi = xi >> 32;
            hid[c] = (double)hi;
            lod[c] = (double)(xi - (hi << 32));
        }
        for (int l = 0; l < nmod; l++) {
            int8_t *out = R + l * plane + c0;
            const double ml = md[l], il = inv[l], cl = c32[l];
            const int32_t mi = moduli[l];
            for (int64_t c = 0; c < w; c++) {
                /* xi == hi c32 + lo (mod m); |hi c32 + lo| < 2^31 255 + 2^32 < 2^41,
                 * exact as a double */
                out[c] = (int8_t)mod_sym(hid[c] * cl + lod[c], ml, il, mi);
            }
        }
    }
    *l1 = (int64_t)(sum > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : sum);
}

void lrmpi_crt_residues(int64_t rows, int64_t k, const double *X, int64_t ldx,
                        int64_t sr, int64_t sc, const int32_t *exps, int nmod,
                        const int32_t *moduli, int8_t *R, int64_t *l1)
{
    (void)ldx;
    for (int64_t i = 0; i < rows; i++)
        lrmpi_crt_residue_row(k, X + i * sr, sc, exps[i], nmod, moduli, R + i * k, rows * k,
                              l1 + i);
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void lrmpi_crt_reconstruct(int64_t m, int64_t n, int nmod, const int32_t *moduli,
                           const int32_t *S, int64_t splane, const uint64_t *coef,
                           const uint64_t *Mw, const int32_t *erow, const int32_t *ecol,
                           double *Y, int64_t ldy, double *amax)
{
    const u128 M = ((u128)Mw[1] << 64) | Mw[0];
    const u128 halfM = M >> 1;                    /* M is odd: (M - 1) / 2 */
    const double Md = (double)M;
    double mx = 0.0;
    double md[64], inv[64];
    /* coef_l < M < 2^127 in four 32-bit limbs: r_l limb < 2^40, and a sum of at
     * most 64 such products < 2^46 fits a uint64 with no carries, so the sums
     * over the moduli are plain 32 x 32 -> 64-bit multiply-adds (they vectorize) */
    uint32_t limb[64][4];
    for (int l = 0; l < nmod; l++) {
        md[l] = (double)moduli[l];
        inv[l] = 1.0 / md[l];
        limb[l][0] = coef[2 * l] & 0xffffffffu;
        limb[l][1] = coef[2 * l] >> 32;
        limb[l][2] = coef[2 * l + 1] & 0xffffffffu;
        limb[l][3] = coef[2 * l + 1] >> 32;
    }
    const double two128 = ldexp(1.0, 128);
    uint64_t acc[4][ROW_CHUNK];
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j0 = 0; j0 < n; j0 += ROW_CHUNK) {
            const int64_t w = n - j0 < ROW_CHUNK ? n - j0 : ROW_CHUNK;
            for (int t = 0; t < 4; t++)
                for (int64_t j = 0; j < w; j++) acc[t][j] = 0;
            for (int l = 0; l < nmod; l++) {
                const int32_t *s = S + l * splane + i * n + j0;
                const double ml = md[l], il = inv[l];
                const int32_t mi = moduli[l];
                const uint32_t a0 = limb[l][0], a1 = limb[l][1], a2 = limb[l][2],
                               a3 = limb[l][3];
                for (int64_t j = 0; j < w; j++) {
                    const uint32_t r = (uint32_t)mod_pos((double)s[j], ml, il, mi);
                    acc[0][j] += (uint64_t)r * a0;   /* 32 x 32 -> 64 (pmuludq) */
                    acc[1][j] += (uint64_t)r * a1;
                    acc[2][j] += (uint64_t)r * a2;
                    acc[3][j] += (uint64_t)r * a3;
                }
            }
            for (int64_t j = 0; j < w; j++) {
                /* acc = a0 + a1 2^32 + a2 2^64 + a3 2^96 < nmod 256 M, as a 128-bit
                 * low part and a top word */
                const uint64_t a3 = acc[3][j];
                const u128 s0 = (u128)acc[0][j] + ((u128)acc[1][j] << 32)
                                + ((u128)acc[2][j] << 64);        /* < 2^111 */
                u128 lo = s0 + ((u128)(a3 & 0xffffffffu) << 96);
                uint64_t top = (a3 >> 32) + (lo < s0);
                /* acc mod M: the quotient is < 2^14; its double estimate is off
                 * by at most one, fixed below */
                const double accd = (double)top * two128          /* an estimate: */
                    + (double)(uint64_t)(lo >> 64) * 0x1p64 + (double)(uint64_t)lo;
                uint64_t q = (uint64_t)floor(accd / Md);
                if (q > 0) q -= 1;                        /* now q <= the quotient */
                const u128 t0 = (u128)q * (uint64_t)M;
                const u128 t1 = (u128)q * (uint64_t)(M >> 64);
                u128 qlo = t0;
                uint64_t qtop = 0;
                u128 add = (u128)(uint64_t)t1 << 64;
                qlo += add;
                qtop += (qlo < add) + (uint64_t)(t1 >> 64);
                /* acc - q M >= 0 */
                uint64_t borrow = lo < qlo;
                lo -= qlo;
                top -= qtop + borrow;
                while (top != 0 || lo >= M) {             /* at most three times */
                    borrow = lo < M;
                    lo -= M;
                    top -= borrow;
                }
                double v = lo > halfM ? -(double)(M - lo) : (double)lo;
                v = scale2(v, -(erow[i] + ecol[j0 + j]));
                Y[i * ldy + j0 + j] = v;
                const double a = fabs(v);
                if (a > mx) mx = a;
            }
        }
    }
    if (amax) *amax = mx;
}
