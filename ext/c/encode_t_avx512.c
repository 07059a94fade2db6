/* encode_t on AVX-512 (kernels.h): the columns of X (k x n) encoded as the rows of
 * X^T, 8 columns a vector (each lane its column's scale), 64 rows a block.
 *
 * A row of X is contiguous along the columns, so a vector holds one row of 8
 * columns (NV of them a row: 256 contiguous bytes, the rows prefetched: no hardware
 * prefetcher follows a stride of ldx); each digit plane of it is 8 bytes, one per
 * column, staged in L1 as [plane][row] words, all rows of a block scaled first and
 * then peeled plane by plane (independent rows: pipelined, not one latency chain).
 * After 64 rows the stage is transposed 8 x 8 bytes at a time (transpose.h) into
 * [column][64 rows] and each column's digits of each plane leave as one 64-byte line
 * of D. The arithmetic is encode_t_body's (bodies.h) lane by lane: the same digits,
 * the same sums of squares (integers), and l1 summed row by row per column in the
 * same order, so the same bits as the portable version.
 * [shared AMX machine, one core, thread CPU, min of 5] 4096 x 4096, 4 planes: 350 ms
 * for the portable body compiled for AVX-512 (scalar stores into the transposed
 * block), 80-120 ms here (transposing the doubles first was no faster).
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "kernels.h"
#include "transpose.h"

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define TB 64 /* rows of X a block: one cache line of digits per column and plane */
#define PF 16 /* rows ahead to prefetch */
#define NV 4  /* vectors (of 8 columns) a row: 256 contiguous bytes of X */

/* 2^t = s1 s2 (bodies.h's pow2_split: rows of subnormals need 2^1077) */
static void split2(int t, double *s1, double *s2)
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

AVX512 void lrmpi_encode_t_avx512(int64_t k, int64_t n, const double *X, int64_t ldx,
                                  const int32_t *exps, int bits, int planes, int8_t *D,
                                  int64_t ldd, int64_t *sumsq, double *l1)
{
    const __m512d radix = _mm512_set1_pd((double)(1 << bits));
    const int64_t pstride = n * ldd;
    static __thread uint64_t stage[NV][16][TB]; /* [vector][plane][row]: 8 columns' digits */
    static __thread double ybuf[TB][NV][8] __attribute__((aligned(64))); /* scaled rows */
    int8_t line[8][TB];                         /* one plane of 8 columns: [column][row] */
    for (int64_t c0 = 0; c0 < n; c0 += 8 * NV) {
        const int nv = n - c0 >= 8 * NV ? NV : (int)((n - c0 + 7) / 8);
        __m512d vs1[NV], vs2[NV], l1v[NV];
        __mmask8 live[NV];
        __m512i ss[NV][16];
        for (int v = 0; v < nv; v++) {
            const int64_t j0 = c0 + 8 * v;
            const int nj = n - j0 < 8 ? (int)(n - j0) : 8;
            live[v] = (__mmask8)((1u << nj) - 1);
            double s1[8] = {0}, s2[8] = {0};
            for (int jj = 0; jj < nj; jj++)
                split2(bits - exps[j0 + jj], &s1[jj], &s2[jj]);
            vs1[v] = _mm512_loadu_pd(s1);
            vs2[v] = _mm512_loadu_pd(s2);
            l1v[v] = _mm512_maskz_loadu_pd(live[v], l1 + j0); /* continued (kernels.h) */
            for (int p = 0; p < planes; p++)
                ss[v][p] = _mm512_maskz_loadu_epi64(live[v], sumsq + p * n + j0);
        }
        for (int64_t i0 = 0; i0 < k; i0 += TB) {
            const int ni = k - i0 < TB ? (int)(k - i0) : TB;
            __m256i ssb[NV][16]; /* this block's sums of squares: <= 64 * 127^2 */
            for (int v = 0; v < nv; v++)
                for (int p = 0; p < planes; p++)
                    ssb[v][p] = _mm256_setzero_si256();
            /* phase 1: the block's rows scaled (exact), their l1, row by row as bodies.h */
            for (int ii = 0; ii < ni; ii++) {
                const double *row = X + (i0 + ii) * ldx + c0;
                /* rows are ldx apart: no hardware prefetcher follows; keep PF in flight */
                if (i0 + ii + PF < k)
                    for (int v = 0; v < nv; v++)
                        _mm_prefetch((const char *)(row + PF * ldx + 8 * v), _MM_HINT_T0);
                for (int v = 0; v < nv; v++) {
                    const __m512d x = _mm512_maskz_loadu_pd(live[v], row + 8 * v);
                    const __m512d y = _mm512_mul_pd(_mm512_mul_pd(x, vs1[v]), vs2[v]);
                    l1v[v] = _mm512_add_pd(l1v[v], _mm512_abs_pd(y));
                    _mm512_store_pd(ybuf[ii][v], y);
                }
            }
            /* phase 2: one digit per plane off every row; rows independent (pipelined) */
            for (int p = 0; p < planes; p++)
                for (int ii = 0; ii < ni; ii++)
                    for (int v = 0; v < nv; v++) {
                        const __m512d y = _mm512_load_pd(ybuf[ii][v]);
                        const __m256i d = _mm512_cvttpd_epi32(y); /* toward zero */
                        stage[v][p][ii] = (uint64_t)_mm_cvtsi128_si64(_mm256_cvtepi32_epi8(d));
                        ssb[v][p] = _mm256_add_epi32(ssb[v][p], _mm256_mullo_epi32(d, d));
                        _mm512_store_pd(ybuf[ii][v],
                                        _mm512_mul_pd(_mm512_sub_pd(y, _mm512_cvtepi32_pd(d)),
                                                      radix));
                    }
            /* phase 3: 8 x 8 byte transposes; each column's plane leaves as one line */
            for (int v = 0; v < nv; v++) {
                const int64_t j0 = c0 + 8 * v;
                const int nj = n - j0 < 8 ? (int)(n - j0) : 8;
                for (int ii = ni; ii < ((ni + 7) & ~7); ii++)
                    for (int p = 0; p < planes; p++)
                        stage[v][p][ii] = 0;
                for (int p = 0; p < planes; p++) {
                    ss[v][p] = _mm512_add_epi64(ss[v][p], _mm512_cvtepi32_epi64(ssb[v][p]));
                    for (int g = 0; g < ni; g += 8) {
                        uint64_t out[8];
                        transpose8x8(&stage[v][p][g], out);
                        for (int jj = 0; jj < 8; jj++)
                            memcpy(&line[jj][g], &out[jj], 8);
                    }
                    int8_t *dst = D + p * pstride + j0 * ldd + i0;
                    for (int jj = 0; jj < nj; jj++)
                        memcpy(dst + jj * ldd, line[jj], (size_t)ni);
                }
            }
        }
        for (int v = 0; v < nv; v++) {
            const int64_t j0 = c0 + 8 * v;
            const int nj = n - j0 < 8 ? (int)(n - j0) : 8;
            double l1s[8];
            _mm512_storeu_pd(l1s, l1v[v]);
            for (int jj = 0; jj < nj; jj++)
                l1[j0 + jj] = l1s[jj];
            for (int p = 0; p < planes; p++) {
                int64_t sp[8];
                _mm512_storeu_si512(sp, ss[v][p]);
                for (int jj = 0; jj < nj; jj++)
                    sumsq[p * n + j0 + jj] = sp[jj];
            }
        }
    }
}

#endif
