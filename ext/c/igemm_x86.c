/* Packed int8 GEMM for x86: AVX-512 VNNI and AVX2, C += A * Bt^T exactly.
 *
 * BLIS structure: the right operand is packed into KC x NR micro-panels (L1),
 * the left one into MC x KC blocks of MR-row micro-panels (L2); a register-
 * blocked micro-kernel holds an MR x NR tile of C in accumulators.
 *
 * Signed x signed with an unsigned x signed instruction: vpdpbusd multiplies
 * u8 by s8. We store B' = B + 128 (B xor 0x80) as the unsigned operand and
 * broadcast 4 bytes of A as the signed one, so
 *     A * B = A * B' - 128 * rowsum(A),
 * and the correction starts in the accumulators. Intermediate sums may wrap
 * past 2^31, but all arithmetic is modulo 2^32 and the final value fits in
 * int32 (the caller's duty, kernels.h), so the result is exact.
 *
 * AVX2 has no dot-product instruction for bytes that is exact here (vpmaddubsw
 * saturates at 2^15), so it multiplies |A| (u8 <= 127) by sign(A)*B: each pair
 * sum is at most 2*127*127 < 2^15, then vpmaddwd widens to int32.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

#ifndef KC
#define KC 2048  /* inner block: long k amortizes the C tile loads/stores */
#endif
#ifndef MC
#define MC 240   /* rows of A per packed block: 240 x 2048 bytes in L2 */
#endif

#define NC 3072  /* columns of B per packed block (L2/L3) */

/* --- scratch buffers, kept across calls: first touch is slow on these VMs --- */
static __thread int8_t *bufA, *bufB;
static __thread int32_t *bufS;
static __thread size_t capA, capB;

static int ensure(int8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    free(*buf);
    *buf = aligned_alloc(64, (need + 63) / 64 * 64);
    *cap = *buf ? need : 0;
    return *buf ? 0 : -1;
}

/* Pack rows [0, mr) x k-range of A into Ap[k4][MR][4]; rows >= mr and k past
 * the end are zero, so they contribute nothing. rowsum[r] = sum of the row. */
static void pack_a(int MR, int64_t mr, int64_t kc, const int8_t *A, int64_t lda,
                   int8_t *Ap, int32_t *rowsum)
{
    const int64_t k4 = (kc + 3) / 4;
    for (int r = 0; r < MR; r++) {
        int32_t s = 0;
        for (int64_t q = 0; q < k4; q++)
            for (int b = 0; b < 4; b++) {
                int64_t p = 4 * q + b;
                int8_t v = (r < mr && p < kc) ? A[r * lda + p] : 0;
                Ap[(q * MR + r) * 4 + b] = v;
                s += v;
            }
        rowsum[r] = s;
    }
}

/* Pack columns [0, nr) x k-range of Bt into Bp[k4][NR][4] as B xor 0x80 (or
 * raw when `offset` is 0); padded columns are never stored back. */
static void pack_b(int NR, int64_t nr, int64_t kc, const int8_t *Bt, int64_t ldb,
                   int8_t *Bp, int offset)
{
    const int64_t k4 = (kc + 3) / 4;
    const uint8_t x = offset ? 0x80 : 0;
    for (int64_t q = 0; q < k4; q++)
        for (int c = 0; c < NR; c++)
            for (int b = 0; b < 4; b++) {
                int64_t p = 4 * q + b;
                int8_t v = (c < nr && p < kc) ? Bt[c * ldb + p] : 0;
                Bp[(q * NR + c) * 4 + b] = (int8_t)((uint8_t)v ^ x);
            }
}

/* ========================= AVX-512 VNNI ========================= */
#ifndef V_MR
#define V_MR 12
#endif
#ifndef V_NV
#define V_NV 2 /* zmm vectors of 16 int32 lanes per row of the tile */
#endif
#define V_NR (16 * V_NV)

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void ukernel_vnni(int64_t k4, const int8_t *Ap, const int8_t *Bp,
                         const int32_t *rowsum, int64_t mr, int64_t nr,
                         int32_t *C, int64_t ldc)
{
    /* V_MR x V_NV accumulators, fully unrolled so GCC keeps them in zmm
     * registers (checked in the assembly: no spills); they start at the
     * -128*rowsum correction */
    __m512i acc[V_MR][V_NV];
#pragma GCC unroll 16
    for (int r = 0; r < V_MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < V_NV; v++)
            acc[r][v] = _mm512_set1_epi32(-128 * rowsum[r]);
    /* inner dimension: 4 bytes of k per step */
    for (int64_t q = 0; q < k4; q++) {
        __m512i b[V_NV];
#pragma GCC unroll 4
        for (int v = 0; v < V_NV; v++)
            b[v] = _mm512_load_si512((const void *)(Bp + (q * V_NR + 16 * v) * 4));
        const int32_t *a = (const int32_t *)(Ap + q * V_MR * 4);
#pragma GCC unroll 16
        for (int r = 0; r < V_MR; r++) {
            const __m512i ar = _mm512_set1_epi32(a[r]);
#pragma GCC unroll 4
            for (int v = 0; v < V_NV; v++)
                acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], b[v], ar);
        }
    }
    /* store: C += tile, masked on the column edge, rows beyond mr skipped */
    __mmask16 mask[V_NV];
    for (int v = 0; v < V_NV; v++) {
        int64_t left = nr - 16 * v;
        mask[v] = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
    }
#pragma GCC unroll 16
    for (int r = 0; r < V_MR; r++) {
        if (r >= mr)
            break;
        int32_t *cr = C + r * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < V_NV; v++)
            _mm512_mask_storeu_epi32(cr + 16 * v, mask[v],
                _mm512_add_epi32(acc[r][v], _mm512_maskz_loadu_epi32(mask[v], cr + 16 * v)));
    }
}

/* ============================ AVX2 ============================ */
#define A_MR 4
#define A_NR 16 /* two ymm of 8 int32 lanes */

__attribute__((target("avx2")))
static void ukernel_avx2(int64_t k4, const int8_t *Ap, const int8_t *Bp,
                         const int32_t *rowsum, int64_t mr, int64_t nr,
                         int32_t *C, int64_t ldc)
{
    (void)rowsum; /* B is packed raw here: no offset correction */
    __m256i acc[A_MR][2];
    for (int r = 0; r < A_MR; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t q = 0; q < k4; q++) {
        const __m256i b0 = _mm256_load_si256((const __m256i *)(Bp + q * A_NR * 4));
        const __m256i b1 = _mm256_load_si256((const __m256i *)(Bp + q * A_NR * 4 + 32));
        const int32_t *a = (const int32_t *)(Ap + q * A_MR * 4);
        for (int r = 0; r < A_MR; r++) {
            const __m256i ar = _mm256_set1_epi32(a[r]);
            const __m256i abs_a = _mm256_abs_epi8(ar);
            /* |a| * (sign(a) * b): pair sums <= 2 * 127 * 127, no saturation */
            const __m256i p0 = _mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b0, ar));
            const __m256i p1 = _mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b1, ar));
            acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(p0, ones));
            acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(p1, ones));
        }
    }
    int32_t tmp[A_NR];
    for (int r = 0; r < A_MR && r < mr; r++) {
        _mm256_storeu_si256((__m256i *)tmp, acc[r][0]);
        _mm256_storeu_si256((__m256i *)(tmp + 8), acc[r][1]);
        for (int c = 0; c < nr && c < A_NR; c++)
            C[r * ldc + c] += tmp[c];
    }
}

/* ===================== the blocked driver ===================== */
typedef void (*ukernel_fn)(int64_t, const int8_t *, const int8_t *, const int32_t *,
                           int64_t, int64_t, int32_t *, int64_t);

static void igemm_blocked(int MR, int NR, int offset, ukernel_fn uk,
                          int64_t m, int64_t n, int64_t k, const int8_t *A,
                          int64_t lda, const int8_t *Bt, int64_t ldb, int32_t *C,
                          int64_t ldc)
{
    if (m == 0 || n == 0 || k == 0)
        return;
    const int64_t kc_max = KC < k ? KC : k;
    const int64_t k4max = (kc_max + 3) / 4;
    const int64_t nc_max = NC < n ? NC : n;
    const int64_t mc_max = MC < m ? MC : m;
    const int64_t npan = (nc_max + NR - 1) / NR, mpan = (mc_max + MR - 1) / MR;
    if (ensure(&bufB, &capB, (size_t)npan * k4max * NR * 4) ||
        ensure(&bufA, &capA, (size_t)mpan * k4max * MR * 4 + (size_t)mpan * MR * 4)) {
        lrmpi_igemm_ref(m, n, k, A, lda, Bt, ldb, C, ldc); /* out of memory: slow but exact */
        return;
    }
    for (int64_t jc = 0; jc < n; jc += NC) {
        const int64_t nc = n - jc < NC ? n - jc : NC;
        for (int64_t pc = 0; pc < k; pc += KC) {
            const int64_t kc = k - pc < KC ? k - pc : KC;
            const int64_t k4 = (kc + 3) / 4;
            /* pack B: micro-panels of NR columns */
            for (int64_t jp = 0; jp < nc; jp += NR)
                pack_b(NR, nc - jp < NR ? nc - jp : NR, kc, Bt + (jc + jp) * ldb + pc, ldb,
                       bufB + (jp / NR) * k4 * NR * 4, offset);
            for (int64_t ic = 0; ic < m; ic += MC) {
                const int64_t mc = m - ic < MC ? m - ic : MC;
                int32_t *rowsum = (int32_t *)(bufA + (size_t)mpan * k4max * MR * 4);
                /* pack A: micro-panels of MR rows, with their row sums */
                for (int64_t ip = 0; ip < mc; ip += MR)
                    pack_a(MR, mc - ip < MR ? mc - ip : MR, kc, A + (ic + ip) * lda + pc, lda,
                           bufA + (ip / MR) * k4 * MR * 4, rowsum + ip);
                /* macro-kernel: every micro-tile of this block */
                for (int64_t jp = 0; jp < nc; jp += NR)
                    for (int64_t ip = 0; ip < mc; ip += MR)
                        uk(k4, bufA + (ip / MR) * k4 * MR * 4, bufB + (jp / NR) * k4 * NR * 4,
                           rowsum + ip, mc - ip, nc - jp, C + (ic + ip) * ldc + jc + jp, ldc);
            }
        }
    }
}

void lrmpi_igemm_avx512(int64_t m, int64_t n, int64_t k, const int8_t *A,
                        int64_t lda, const int8_t *Bt, int64_t ldb, int32_t *C,
                        int64_t ldc)
{
    igemm_blocked(V_MR, V_NR, 1, ukernel_vnni, m, n, k, A, lda, Bt, ldb, C, ldc);
}

void lrmpi_igemm_avx2(int64_t m, int64_t n, int64_t k, const int8_t *A,
                      int64_t lda, const int8_t *Bt, int64_t ldb, int32_t *C,
                      int64_t ldc)
{
    igemm_blocked(A_MR, A_NR, 0, ukernel_avx2, m, n, k, A, lda, Bt, ldb, C, ldc);
}
#endif
