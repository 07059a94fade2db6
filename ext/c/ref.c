/* Portable reference kernels: the baseline every SIMD variant is tested against. */
#include "kernels.h"
#include "bodies.h"

int lrmpi_rowmax_ref(int64_t m, int64_t n, const double *X, int64_t ldx,
                     double *amax)
{
    return rowmax_body(m, n, X, ldx, amax);
}

void lrmpi_encode_ref(int64_t m, int64_t n, const double *X, int64_t ldx,
                      const int32_t *exps, int bits, int planes, int8_t *D,
                      int64_t *sumsq, double *l1)
{
    encode_body(m, n, X, ldx, exps, bits, planes, D, sumsq, l1);
}

int lrmpi_colmax_ref(int64_t m, int64_t n, const double *X, int64_t ldx, double *amax)
{
    return colmax_body(m, n, X, ldx, amax);
}

void lrmpi_encode_t_ref(int64_t k, int64_t n, const double *X, int64_t ldx,
                        const int32_t *exps, int bits, int planes, int8_t *D, int64_t ldd,
                        int64_t *sumsq, double *l1)
{
    encode_t_body(k, n, X, ldx, exps, bits, planes, D, ldd, sumsq, l1);
}

void lrmpi_acc_add_ref(int64_t m, int64_t n, int64_t *L, int64_t ldl,
                       int64_t lstride, int nlimbs, const void *S, int s32,
                       int64_t lds, int shift)
{
    acc_add_body(m, n, L, ldl, lstride, nlimbs, S, s32, lds, shift);
}

void lrmpi_igemm_ref(int64_t m, int64_t n, int64_t k, const int8_t *A,
                     int64_t lda, const int8_t *Bt, int64_t ldb, int32_t *C,
                     int64_t ldc, int accumulate)
{
    for (int64_t i = 0; !accumulate && i < m; i++)
        for (int64_t j = 0; j < n; j++)
            C[i * ldc + j] = 0;
    igemm_body(m, n, k, A, lda, Bt, ldb, C, ldc);
}

/* --- decode: exact multi-limb integer -> one correctly rounded double --- */
#define LIMB_BITS 32
#define LIMB_MASK 0xFFFFFFFFll

typedef unsigned __int128 u128;

static int bitlen128(u128 u)
{
    uint64_t hi = (uint64_t)(u >> 64), lo = (uint64_t)u;
    if (hi)
        return 128 - __builtin_clzll(hi);
    return lo ? 64 - __builtin_clzll(lo) : 0;
}

/* Carry-propagate so limbs 0..nl-2 lie in [0, 2^32); the top one is signed. */
static void normalize(int64_t *w, int nl)
{
    for (int l = 0; l < nl - 1; l++) {
        int64_t c = w[l] >> LIMB_BITS; /* floor division by 2^32 */
        w[l] &= LIMB_MASK;
        w[l + 1] += c;
    }
}

/* x * 2^e, exact when the result is a normal double: a multiplication by a
 * power of two built from its bits, far cheaper than libm's ldexp. */
static inline double scale2(double x, int e)
{
    if (e < -1022 || e > 1023)
        return ldexp(x, e);
    union { uint64_t u; double d; } p = {(uint64_t)(e + 1023) << 52};
    return x * p.d;
}

/* Round (U + sticky) * 2^e, U >= 0 with sticky meaning "plus a positive amount
 * below U's last bit", to the nearest double (ties to even), with sign `neg`. */
static double round_u128(int neg, u128 U, int sticky, int e)
{
    const int nb = bitlen128(U);
    if (nb == 0)
        return 0.0;
    /* absolute position of the result's last bit: 53 bits, or subnormal */
    int lsb = nb - 1 + e - 52;
    if (lsb < -1074)
        lsb = -1074;
    const int c = lsb - e; /* bits of U below the result's last bit */
    double r;
    if (c <= 0) {
        r = ldexp((double)(uint64_t)U, e); /* U < 2^53: exact (also if subnormal) */
    } else {
        u128 q, low, half;
        if (c >= 128) {
            q = 0; low = U; half = (u128)1 << 127; /* U < 2^127 <= half */
        } else {
            q = U >> c;
            low = U & (((u128)1 << c) - 1);
            half = (u128)1 << (c - 1);
        }
        /* round to nearest, ties to even; sticky bits make a tie an excess.
         * Written without branches: on random data they mispredict half the time. */
        q += (u128)((low > half) | ((low == half) & (sticky | (int)(q & 1))));
        /* q <= 2^53: exact; lsb >= -1022 means a normal result, where scale2 is exact */
        r = lsb >= -1022 ? scale2((double)(uint64_t)q, lsb) : ldexp((double)(uint64_t)q, lsb);
    }
    union { double d; uint64_t u; } x = {r};
    x.u |= (uint64_t)neg << 63; /* r >= 0 here: set the sign without a branch */
    return x.d;
}

/* General path: any number of carry-save limbs. */
static double decode_one(int64_t *w, int nl, int exp2)
{
    normalize(w, nl);
    int neg = w[nl - 1] < 0;
    if (neg) { /* work on the magnitude: negate every limb, renormalize */
        for (int l = 0; l < nl; l++)
            w[l] = -w[l];
        normalize(w, nl);
    }
    int top = nl - 1;
    while (top > 0 && w[top] == 0)
        top--;
    /* a window of three limbs holds >= 64 significant bits; the rest is sticky */
    u128 U = 0;
    for (int l = top; l >= top - 2; l--)
        U = (U << LIMB_BITS) + (u128)(l >= 0 ? (uint64_t)w[l] : 0);
    int sticky = 0;
    for (int l = 0; l < top - 2; l++)
        sticky |= w[l] != 0;
    return round_u128(neg, U, sticky, exp2 + LIMB_BITS * (top - 2));
}

/* Fast path for <= 4 limbs: the value fits in 128 bits (accumulate.nlimbs sizes
 * it so), and sums modulo 2^128 of the carry-save limbs are exact. */
static double decode_small(const int64_t *w, int nl, int exp2)
{
    __int128 v = 0;
    for (int l = 0; l < nl; l++)
        v += (__int128)((unsigned __int128)(__int128)w[l] << (LIMB_BITS * l));
    const u128 m = (u128)(v >> 127); /* all ones if negative: |v| without a branch */
    return round_u128((int)(m & 1), ((u128)v ^ m) - m, 0, exp2);
}

void lrmpi_decode_ref(int64_t m, int64_t n, const int64_t *L, int64_t ldl,
                      int64_t lstride, int nlimbs, const int32_t *erow,
                      const int32_t *ecol, int base, double *Y, int64_t ldy,
                      double *amax)
{
    int64_t w[LRMPI_MAX_LIMBS];
    double big = 0.0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            for (int l = 0; l < nlimbs; l++)
                w[l] = L[l * lstride + i * ldl + j];
            int e = base + (erow ? erow[i] : 0) + (ecol ? ecol[j] : 0);
            const double y = nlimbs <= 4 ? decode_small(w, nlimbs, e)
                                         : decode_one(w, nlimbs, e);
            Y[i * ldy + j] = y;
            big = fabs(y) > big ? fabs(y) : big;
        }
    if (amax)
        *amax = big;
}
