/* Kernel bodies shared by the reference and SIMD variants.
 *
 * Each body is a static always_inline function written so that GCC vectorizes
 * it; ref.c instantiates it for the baseline ISA and simd.c inside functions
 * carrying __attribute__((target(...))), so one source yields every variant
 * and the variants cannot drift apart. Contracts: kernels.h.
 */
#ifndef LRMPI_BODIES_H
#define LRMPI_BODIES_H
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LRMPI_INLINE static inline __attribute__((always_inline))
#define ENC_CHUNK 256 /* elements of one row held in a stack buffer */
#define LANES 8       /* independent partial sums: lets GCC vectorize */

/* --- rowmax --- */
LRMPI_INLINE int rowmax_body(int64_t m, int64_t n, const double *X,
                             int64_t ldx, double *amax)
{
    int bad = 0;
    for (int64_t i = 0; i < m; i++) {
        const double *x = X + i * ldx;
        double mx[LANES] = {0};
        int64_t j = 0;
        /* vector body: NaN compares false, so it never enters mx */
        for (; j + LANES <= n; j += LANES)
            for (int u = 0; u < LANES; u++) {
                double a = fabs(x[j + u]);
                bad |= !(a <= DBL_MAX);
                mx[u] = a > mx[u] ? a : mx[u];
            }
        /* scalar tail */
        for (; j < n; j++) {
            double a = fabs(x[j]);
            bad |= !(a <= DBL_MAX);
            mx[0] = a > mx[0] ? a : mx[0];
        }
        double r = 0.0;
        for (int u = 0; u < LANES; u++)
            r = (mx[u] > r && mx[u] <= DBL_MAX) ? mx[u] : r;
        amax[i] = r;
    }
    return bad;
}

/* 2^t as a product s1*s2 of two representable doubles, for t far outside
 * the normal exponent range (rows of subnormals need 2^1077). Scaling up is
 * exact; scaling down only loses bits lying far below the last digit plane. */
LRMPI_INLINE void pow2_split(int t, double *s1, double *s2)
{
    if (t > 1000) {
        *s1 = ldexp(1.0, 1000);
        *s2 = ldexp(1.0, t - 1000);
    } else if (t < -1000) {
        *s1 = ldexp(1.0, t + 1000);
        *s2 = ldexp(1.0, -1000);
    } else {
        *s1 = ldexp(1.0, t);
        *s2 = 1.0;
    }
}

/* --- encode --- */
LRMPI_INLINE void encode_body(int64_t m, int64_t n, const double *X,
                              int64_t ldx, const int32_t *exps, int bits,
                              int planes, int8_t *D, int64_t *sumsq, double *l1)
{
    const double radix = (double)(1 << bits);
    const int64_t pstride = m * n;
    double y[ENC_CHUNK];
    for (int64_t i = 0; i < m; i++) {
        const double *x = X + i * ldx;
        double s1, s2;
        pow2_split(bits - exps[i], &s1, &s2);
        double acc[LANES] = {0};
        for (int p = 0; p < planes; p++)
            sumsq[p * m + i] = 0;
        for (int64_t j0 = 0; j0 < n; j0 += ENC_CHUNK) {
            const int64_t len = n - j0 < ENC_CHUNK ? n - j0 : ENC_CHUNK;
            /* phase 1: scale into (-2^bits, 2^bits); exact by pow2_split */
            for (int64_t j = 0; j < len; j++)
                y[j] = (x[j0 + j] * s1) * s2;
            /* phase 2: l1 norm of the scaled row, LANES partial sums */
            int64_t j = 0;
            for (; j + LANES <= len; j += LANES)
                for (int u = 0; u < LANES; u++)
                    acc[u] += fabs(y[j + u]);
            for (; j < len; j++)
                acc[0] += fabs(y[j]);
            /* phase 3: peel one digit per plane; y - d and *radix are exact */
            for (int p = 0; p < planes; p++) {
                int8_t *dst = D + p * pstride + i * n + j0;
                int32_t ss = 0; /* <= ENC_CHUNK * 127^2, no overflow */
                for (int64_t j = 0; j < len; j++) {
                    int32_t d = (int32_t)y[j]; /* truncation toward zero */
                    dst[j] = (int8_t)d;
                    ss += d * d;
                    y[j] = (y[j] - (double)d) * radix;
                }
                sumsq[p * m + i] += ss;
            }
        }
        double s = 0.0;
        for (int u = 0; u < LANES; u++)
            s += acc[u];
        l1[i] = s;
    }
}

/* --- colmax: amax[j] := max_i |X[i,j]|, 1 if NaN/Inf (the columns of B) --- */
LRMPI_INLINE int colmax_body(int64_t m, int64_t n, const double *X, int64_t ldx,
                             double *amax)
{
    int bad = 0;
    for (int64_t j = 0; j < n; j++)
        amax[j] = 0.0;
    for (int64_t i = 0; i < m; i++) {
        const double *x = X + i * ldx;
        /* along the row: contiguous, vectorized; NaN compares false */
        for (int64_t j = 0; j < n; j++) {
            const double a = fabs(x[j]);
            bad |= !(a <= DBL_MAX);
            amax[j] = (a > amax[j] && a <= DBL_MAX) ? a : amax[j];
        }
    }
    return bad;
}

/* --- encode_t: the columns of X (k x n) encoded as the rows of X^T --- */
#define ENC_T_BLOCK 32 /* rows x columns of X per block: the transposed digits in L1 */

LRMPI_INLINE void encode_t_body(int64_t k, int64_t n, const double *X, int64_t ldx,
                                const int32_t *exps, int bits, int planes, int8_t *D,
                                int64_t ldd, int64_t *sumsq, double *l1)
{
    const double radix = (double)(1 << bits);
    const int64_t pstride = n * ldd;
    double s1[ENC_T_BLOCK], s2[ENC_T_BLOCK], y[ENC_T_BLOCK];
    int8_t buf[16][ENC_T_BLOCK][ENC_T_BLOCK]; /* [plane][column][row] of one block */
    for (int64_t j0 = 0; j0 < n; j0 += ENC_T_BLOCK) {
        const int64_t nj = n - j0 < ENC_T_BLOCK ? n - j0 : ENC_T_BLOCK;
        for (int64_t jj = 0; jj < nj; jj++)
            pow2_split(bits - exps[j0 + jj], &s1[jj], &s2[jj]);
        int64_t ss[16][ENC_T_BLOCK] = {{0}}; /* this block of columns' sums, in L1 */
        double l1c[ENC_T_BLOCK] = {0};
        for (int64_t jj = 0; jj < nj; jj++) { /* continued from the rows before */
            l1c[jj] = l1[j0 + jj];
            for (int p = 0; p < planes; p++)
                ss[p][jj] = sumsq[p * n + j0 + jj];
        }
        for (int64_t i0 = 0; i0 < k; i0 += ENC_T_BLOCK) {
            const int64_t ni = k - i0 < ENC_T_BLOCK ? k - i0 : ENC_T_BLOCK;
            /* phase 1: a block of rows, each contiguous: scale, l1, peel digits */
            for (int64_t ii = 0; ii < ni; ii++) {
                const double *x = X + (i0 + ii) * ldx + j0;
                for (int64_t jj = 0; jj < nj; jj++) {
                    y[jj] = (x[jj] * s1[jj]) * s2[jj]; /* exact by pow2_split */
                    l1c[jj] += fabs(y[jj]);
                }
                for (int p = 0; p < planes; p++)
                    for (int64_t jj = 0; jj < nj; jj++) {
                        const int32_t d = (int32_t)y[jj]; /* truncation toward zero */
                        buf[p][jj][ii] = (int8_t)d;
                        ss[p][jj] += d * d;
                        y[jj] = (y[jj] - (double)d) * radix;
                    }
            }
            /* phase 2: the block's digits, column by column, as rows of X^T */
            for (int p = 0; p < planes; p++)
                for (int64_t jj = 0; jj < nj; jj++)
                    memcpy(D + p * pstride + (j0 + jj) * ldd + i0, buf[p][jj], (size_t)ni);
        }
        for (int64_t jj = 0; jj < nj; jj++) {
            l1[j0 + jj] = l1c[jj];
            for (int p = 0; p < planes; p++)
                sumsq[p * n + j0 + jj] = ss[p][jj];
        }
    }
}

/* --- acc_add --- */
LRMPI_INLINE void acc_add_one(int64_t *a, int64_t *b, int64_t s, int t,
                              int64_t mul)
{
    /* split s = hi*2^32 + lo with lo in [0, 2^32): lo<<t < 2^63 */
    const uint64_t lo = (uint64_t)s & 0xFFFFFFFFu;
    const int64_t hi = s >> 32; /* arithmetic shift (gcc, clang) */
    const uint64_t v = lo << t;
    *a += (int64_t)(v & 0xFFFFFFFFu);
    *b += (int64_t)(v >> 32) + hi * mul;
}

LRMPI_INLINE void acc_add_body(int64_t m, int64_t n, int64_t *L, int64_t ldl,
                               int64_t lstride, int nlimbs, const void *S,
                               int s32, int64_t lds, int shift)
{
    (void)nlimbs;
    const int q = shift >> 5, t = shift & 31;
    const int64_t mul = (int64_t)1 << t;
    int64_t *L0 = L + q * lstride, *L1 = L + (q + 1) * lstride;
    for (int64_t i = 0; i < m; i++) {
        int64_t *a = L0 + i * ldl, *b = L1 + i * ldl;
        if (s32) { /* level sums that fit int32 travel as int32: half the bytes */
            const int32_t *s = (const int32_t *)S + i * lds;
            for (int64_t j = 0; j < n; j++)
                acc_add_one(a + j, b + j, s[j], t, mul);
        } else {
            const int64_t *s = (const int64_t *)S + i * lds;
            for (int64_t j = 0; j < n; j++)
                acc_add_one(a + j, b + j, s[j], t, mul);
        }
    }
}

/* --- igemm: register block of MR x NR dot products, scalar edges --- */
#define MR 4
#define NR 4

LRMPI_INLINE int32_t dot_s8(int64_t k, const int8_t *a, const int8_t *b)
{
    int32_t s = 0;
    for (int64_t p = 0; p < k; p++)
        s += (int32_t)a[p] * (int32_t)b[p];
    return s;
}

LRMPI_INLINE void igemm_body(int64_t m, int64_t n, int64_t k, const int8_t *A,
                       int64_t lda, const int8_t *Bt, int64_t ldb, int32_t *C,
                       int64_t ldc)
{
    if (m == 0 || n == 0 || k == 0)
        return;
    int64_t i = 0;
    for (; i + MR <= m; i += MR) {
        int64_t j = 0;
        for (; j + NR <= n; j += NR) {
            int32_t acc[MR][NR] = {{0}};
            /* inner dimension: MR*NR independent sums reuse each load */
            for (int64_t p = 0; p < k; p++)
                for (int r = 0; r < MR; r++)
                    for (int c = 0; c < NR; c++)
                        acc[r][c] += (int32_t)A[(i + r) * lda + p] *
                                     (int32_t)Bt[(j + c) * ldb + p];
            for (int r = 0; r < MR; r++)
                for (int c = 0; c < NR; c++)
                    C[(i + r) * ldc + j + c] += acc[r][c];
        }
        for (; j < n; j++) /* column edge */
            for (int r = 0; r < MR; r++)
                C[(i + r) * ldc + j] += dot_s8(k, A + (i + r) * lda, Bt + j * ldb);
    }
    for (; i < m; i++) /* row edge */
        for (int64_t j = 0; j < n; j++)
            C[i * ldc + j] += dot_s8(k, A + i * lda, Bt + j * ldb);
}

#endif
