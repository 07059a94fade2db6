/* The CRT residues (kernels.h, crt_residues) on AVX-512; the reconstruction is in
 * crt_avx512.c. */
#pragma GCC optimize("fp-contract=off")
#include <immintrin.h>
#include <string.h>
#include "kernels.h"
#include "pow2.h"
#include "transpose.h"

#define AVX512 __attribute__((target("avx512f,avx512dq,avx512cd,avx512bw,avx512vl")))
#define LANES 8

/* Residues (kernels.h, crt_residues) on AVX-512, the same integers as crt.c:
 *   x = trunc(X 2^e) (exact: a double with an integer value, |x| < 2^63 by the
 *   caller's scaling) -> int64 -> hi 2^32 + lo -> y = hi (2^32 mod m) + lo
 *   (< 2^41, exact in a double) -> q = nearest(y / m), r = y - q m. The quotient
 *   is exactly the nearest integer: y / m is never within 1/(2m) of a half
 *   integer (m odd), and fma(y, 1/m, 1.5 2^52) rounds the exact product, which
 *   errs from y / m by less than 2^-12; so r is the symmetric residue in
 *   [-(m-1)/2, (m-1)/2] without corrections, and r + 1.5 2^52 holds r's two's
 *   complement in its low mantissa bits (its low byte is the int8).
 * Rows of A are contiguous (sc == 1): 8 elements of a row a vector. Rows of B^T
 * are columns of B (sr == 1): 8 columns a vector, one cache line of a row of B,
 * and the residues of 8 x 8 blocks transposed as bytes (SSE unpacks) on the way
 * out. */
#define MAGIC 6755399441055744.0  /* 1.5 2^52 */

typedef struct {
    __m512d hid, lod;   /* x = hi 2^32 + lo, as doubles */
    __m512i ax;         /* |x| */
} split_t;

AVX512 static inline split_t split(__m512d v, __m512d p2)
{
    split_t s;
    const __m512i xi = _mm512_cvttpd_epi64(_mm512_mul_pd(v, p2));  /* trunc: exact */
    s.ax = _mm512_abs_epi64(xi);
    s.hid = _mm512_cvtepi64_pd(_mm512_srai_epi64(xi, 32));
    s.lod = _mm512_cvtepi64_pd(_mm512_and_si512(xi, _mm512_set1_epi64(0xffffffffLL)));
    return s;
}

/* the 8 symmetric residues mod m as int8, in the low 8 bytes */
AVX512 static inline __m128i residue8(split_t s, double c32, double inv, double m)
{
    const __m512d magic = _mm512_set1_pd(MAGIC);
    const __m512d y = _mm512_fmadd_pd(s.hid, _mm512_set1_pd(c32), s.lod);
    const __m512d q = _mm512_sub_pd(_mm512_fmadd_pd(y, _mm512_set1_pd(inv), magic), magic);
    const __m512d r = _mm512_fnmadd_pd(q, _mm512_set1_pd(m), y);
    return _mm512_cvtepi64_epi8(_mm512_castpd_si512(_mm512_add_pd(r, magic)));
}

/* |x| summed into per-lane sums, with per-lane saturation flags */
AVX512 static inline __m512i add_sat(__m512i sum, __m512i ax, __mmask8 *sat)
{
    const __m512i s2 = _mm512_add_epi64(sum, ax);
    *sat |= _mm512_cmplt_epu64_mask(s2, sum);
    return s2;
}

static inline int64_t clip_l1(uint64_t total, int over)
{
    return over || total > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)total;
}

/* The outputs of one chunk of CH columns go through a stage in L1 and leave as
 * whole 64-byte lines: the N planes are rows * k bytes apart (a multiple of 4 KiB
 * for square operands), so N > 12 partial lines in flight alias in L1's sets
 * (15 moduli ran at 7.7 ns an element, 8 at 2.6). */
#define CH 64

static inline void flush_line(int8_t *dst, const int8_t *src, int64_t w)
{
    if (w == CH)
        memcpy(dst, src, CH);
    else
        memcpy(dst, src, (size_t)w);
}

AVX512 static void residues_rows(int64_t rows, int64_t k, const double *X, int64_t sr,
                                 const int32_t *exps, int nmod, const int32_t *moduli,
                                 const double *md, const double *inv, const double *c32,
                                 int8_t *R, int64_t *l1)
{
    const int64_t plane = rows * k;
    int8_t stage[64][CH] __attribute__((aligned(64)));
    for (int64_t i = 0; i < rows; i++) {
        const int e = exps[i];
        if (e < -1022 || e > 1023) {   /* 2^e not a normal double: the portable row */
            lrmpi_crt_residue_row(k, X + i * sr, 1, e, nmod, moduli, R + i * k, plane, l1 + i);
            continue;
        }
        const __m512d p2 = _mm512_set1_pd(pow2(e));
        __m512i sum = _mm512_setzero_si512();
        __mmask8 sat = 0;
        for (int64_t c0 = 0; c0 < k; c0 += CH) {
            const int64_t wch = k - c0 < CH ? k - c0 : CH;
            for (int64_t c = 0; c < wch; c += LANES) {
                const int64_t w = wch - c < LANES ? wch - c : LANES;
                const __mmask8 msk = (__mmask8)((1u << w) - 1);
                const split_t s = split(_mm512_maskz_loadu_pd(msk, X + i * sr + c0 + c), p2);
                sum = add_sat(sum, s.ax, &sat);
                for (int l = 0; l < nmod; l++)
                    _mm_storel_epi64((__m128i *)&stage[l][c], residue8(s, c32[l], inv[l], md[l]));
            }
            for (int l = 0; l < nmod; l++)
                flush_line(R + l * plane + i * k + c0, stage[l], wch);
        }
        uint64_t lanes[LANES], total = 0;
        int over = sat != 0;
        _mm512_storeu_si512(lanes, sum);
        for (int t = 0; t < LANES; t++) {
            over |= total + lanes[t] < total;
            total += lanes[t];
        }
        l1[i] = clip_l1(total, over);
    }
}

/* Columns (rows of B^T): blocks of 64 columns of X (8 vectors of 8 lanes) by CH of
 * its rows. Each row of the block is 512 contiguous bytes (the prefetcher follows
 * them; 8 bytes a row, pages apart, it did not: 40 ns an element at n = 1024);
 * the residues are transposed by 8 x 8 byte blocks and leave as whole lines. */
#define CB 64           /* columns of X (rows of R) a block */
#define VB (CB / LANES) /* vectors a row of the block */

AVX512 static void residues_cols(int64_t rows, int64_t k, const double *X, int64_t sc,
                                 const int32_t *exps, int nmod, const int32_t *moduli,
                                 const double *md, const double *inv, const double *c32,
                                 int8_t *R, int64_t *l1)
{
    const int64_t plane = rows * k;
    static __thread uint64_t blk[16][VB][CH];   /* modulus, vector, row of X: 8 bytes */
    uint64_t line[LANES][LANES], out[LANES];
    for (int64_t i0 = 0; i0 < rows; i0 += CB) {
        const int64_t wi = rows - i0 < CB ? rows - i0 : CB;
        const int nv = (int)((wi + LANES - 1) / LANES);
        int normal = nmod <= 16;
        for (int64_t t = 0; t < wi; t++)
            normal &= exps[i0 + t] >= -1022 && exps[i0 + t] <= 1023;
        if (!normal) {  /* a 2^e outside the normal range: these rows the portable way */
            for (int64_t t = 0; t < wi; t++)
                lrmpi_crt_residue_row(k, X + i0 + t, sc, exps[i0 + t], nmod, moduli,
                                      R + (i0 + t) * k, plane, l1 + i0 + t);
            continue;
        }
        __m512d p2[VB];
        __m512i sum[VB];
        __mmask8 vm[VB], sat[VB];
        for (int v = 0; v < nv; v++) {
            const int64_t w = wi - v * LANES < LANES ? wi - v * LANES : LANES;
            vm[v] = (__mmask8)((1u << w) - 1);
            const __m512i e = _mm512_cvtepi32_epi64(
                _mm256_maskz_loadu_epi32(vm[v], exps + i0 + v * LANES));
            p2[v] = _mm512_castsi512_pd(
                _mm512_slli_epi64(_mm512_add_epi64(e, _mm512_set1_epi64(1023)), 52));
            sum[v] = _mm512_setzero_si512();
            sat[v] = 0;
        }
        for (int64_t c0 = 0; c0 < k; c0 += CH) {
            const int64_t wch = k - c0 < CH ? k - c0 : CH;
            for (int64_t cc = 0; cc < wch; cc++) {
                const double *x = X + (c0 + cc) * sc + i0;
                for (int v = 0; v < nv; v++) {
                    const split_t s = split(_mm512_maskz_loadu_pd(vm[v], x + v * LANES), p2[v]);
                    sum[v] = add_sat(sum[v], s.ax, &sat[v]);
                    for (int l = 0; l < nmod; l++)
                        _mm_storel_epi64((__m128i *)&blk[l][v][cc],
                                         residue8(s, c32[l], inv[l], md[l]));
                }
            }
            for (int64_t cc = wch; cc < CH; cc++)
                for (int l = 0; l < nmod; l++)
                    for (int v = 0; v < nv; v++) blk[l][v][cc] = 0;
            /* blk[l][v][cc] byte t -> R[l][i0 + 8v + t][c0 + cc], a whole line a row */
            for (int l = 0; l < nmod; l++)
                for (int v = 0; v < nv; v++) {
                    for (int b = 0; b < CH / LANES; b++) {
                        transpose8x8(&blk[l][v][b * LANES], out);
                        for (int t = 0; t < LANES; t++) line[t][b] = out[t];
                    }
                    for (int t = 0; t < LANES && v * LANES + t < wi; t++)
                        flush_line(R + l * plane + (i0 + v * LANES + t) * k + c0,
                                   (const int8_t *)line[t], wch);
                }
        }
        for (int v = 0; v < nv; v++) {
            uint64_t lanes[LANES];
            _mm512_storeu_si512(lanes, sum[v]);
            for (int t = 0; t < LANES && v * LANES + t < wi; t++)
                l1[i0 + v * LANES + t] = clip_l1(lanes[t], (sat[v] >> t) & 1);
        }
    }
}

AVX512 void lrmpi_crt_residues_avx512(int64_t rows, int64_t k, const double *X, int64_t ldx,
                                      int64_t sr, int64_t sc, const int32_t *exps, int nmod,
                                      const int32_t *moduli, int8_t *R, int64_t *l1)
{
    (void)ldx;
    if (rows <= 0 || k <= 0)
        return;
    double md[64], inv[64], c32[64];
    for (int l = 0; l < nmod; l++) {
        md[l] = (double)moduli[l];
        inv[l] = 1.0 / md[l];
        c32[l] = (double)(((int64_t)1 << 32) % moduli[l]);
    }
    if (sc == 1)
        residues_rows(rows, k, X, sr, exps, nmod, moduli, md, inv, c32, R, l1);
    else if (sr == 1)
        residues_cols(rows, k, X, sc, exps, nmod, moduli, md, inv, c32, R, l1);
    else
        lrmpi_crt_residues(rows, k, X, ldx, sr, sc, exps, nmod, moduli, R, l1);
}
