/* The CRT resolution (Ozaki scheme II): residues of integer-scaled operands and
 * the exact reconstruction of the product from its residue products (kernels.h).
 *
 * Portable C, one version for every ISA: the int8 GEMMs between the two steps do
 * the heavy work; these are O(m k) and O(m n N) passes. All integer arithmetic is
 * exact (int64, unsigned __int128 and a third 64-bit limb); the only rounding is
 * the conversion of each reconstructed integer to double (correctly rounded by
 * the compiler's __floatuntidf) and the power-of-two scaling after it. */
#pragma GCC optimize("fp-contract=off")
#include <math.h>
#include "kernels.h"

typedef unsigned __int128 u128;

/* x mod m in [0, m) for |x| < 2^52 held as a double: the quotient estimate
 * floor(x / m) is off by at most one, and the two corrections fix it. */
static inline int64_t mod_small(double x, double m, double inv_m)
{
    double q = floor(x * inv_m);
    double r = x - q * m;              /* exact: |q m| < 2^53 */
    if (r < 0) r += m;
    if (r >= m) r -= m;
    return (int64_t)r;
}

void lrmpi_crt_residues(int64_t rows, int64_t k, const double *X, int64_t ldx,
                        int64_t sr, int64_t sc, const int32_t *exps, int nmod,
                        const int32_t *moduli, int8_t *R, int64_t *l1)
{
    const int64_t plane = rows * k;
    double md[64], inv[64];
    int64_t c32[64];
    for (int l = 0; l < nmod; l++) {
        md[l] = (double)moduli[l];
        inv[l] = 1.0 / md[l];
        c32[l] = ((int64_t)1 << 32) % moduli[l];
    }
    (void)ldx;
    for (int64_t i = 0; i < rows; i++) {
        const int e = exps[i];
        uint64_t sum = 0;  /* sum |X'[i,:]| < k 2^63 could overflow: saturate */
        for (int64_t c = 0; c < k; c++) {
            const double v = X[i * sr + c * sc];
            const double t = trunc(ldexp(v, e));          /* |t| < 2^63 (caller) */
            const int64_t x = (int64_t)t;
            const uint64_t ax = (uint64_t)(x < 0 ? -x : x);
            sum = (sum + ax < sum) ? UINT64_MAX : sum + ax;
            /* x = hi 2^32 + lo, |hi| < 2^31, 0 <= lo < 2^32 */
            const int64_t hi = x >> 32;
            const int64_t lo = x - (hi << 32);
            for (int l = 0; l < nmod; l++) {
                /* hi c32 + lo < 2^31 255 + 2^32 < 2^41: exact as a double */
                int64_t r = mod_small((double)(hi * c32[l] + lo), md[l], inv[l]);
                if (r > moduli[l] / 2) r -= moduli[l];    /* symmetric: |r| <= 127 */
                R[l * plane + i * k + c] = (int8_t)r;
            }
        }
        l1[i] = (int64_t)(sum > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : sum);
    }
}

void lrmpi_crt_reconstruct(int64_t m, int64_t n, int nmod, const int32_t *moduli,
                           const int32_t *S, int64_t splane, const uint64_t *coef,
                           const uint64_t *Mw, const int32_t *erow, const int32_t *ecol,
                           double *Y, int64_t ldy, double *amax)
{
    const u128 M = ((u128)Mw[1] << 64) | Mw[0];
    const u128 half = M >> 1;                     /* M is odd: (M - 1) / 2 */
    const double Md = (double)M;
    double mx = 0.0;
    double inv[64];
    for (int l = 0; l < nmod; l++) inv[l] = 1.0 / (double)moduli[l];
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            const int64_t at = i * n + j;
            /* acc = sum_l r_l coef_l, three limbs: r_l < 256, coef_l < M < 2^127 */
            u128 lo = 0;
            uint64_t top = 0;
            for (int l = 0; l < nmod; l++) {
                const uint64_t r = (uint64_t)mod_small((double)S[l * splane + at],
                                                       (double)moduli[l], inv[l]);
                const u128 p0 = (u128)r * coef[2 * l];
                const u128 p1 = (u128)r * coef[2 * l + 1];
                u128 old = lo;
                lo += p0;
                top += (lo < old);
                old = lo;
                lo += (u128)(uint64_t)p1 << 64;
                top += (lo < old) + (uint64_t)(p1 >> 64);
            }
            /* acc mod M: acc < nmod 256 M, so the quotient is < 2^14; its double
             * estimate is off by at most one, fixed below */
            const double accd = ldexp((double)top, 128) + (double)lo;
            uint64_t q = (uint64_t)floor(accd / Md);
            if (q > 0) q -= 1;                            /* now q <= the quotient */
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
            while (top != 0 || lo >= M) {                 /* at most three times */
                borrow = lo < M;
                lo -= M;
                top -= borrow;
            }
            double v = lo > half ? -(double)(M - lo) : (double)lo;
            v = ldexp(v, -(erow[i] + ecol[j]));
            Y[i * ldy + j] = v;
            const double a = fabs(v);
            if (a > mx) mx = a;
        }
    }
    if (amax) *amax = mx;
}
