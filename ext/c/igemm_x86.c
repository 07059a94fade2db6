/* Packed int8 GEMM for x86: AVX-512 VNNI and AVX2, C += A * Bt^T exactly.
 *
 * BLIS structure: the right operand is packed into NC x KC blocks (L2) of
 * NR-column micro-panels, the left one into MR-row micro-panels (L1 while it
 * meets every B micro-panel of the block); a register-blocked micro-kernel
 * holds an MR x NR tile of C in accumulators. Measured on the 2-core VM
 * (AVX-512 VNNI, ~950 GOPS peak per core): the micro-kernel alone 830-870
 * GOPS; the whole GEMM 690-740 at n = 2048-4096 with gather packers (scalar
 * byte packing costs 25 % of a 512 x 1024 x 4096 product).
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
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include "kernels.h"
#include "gemm_internal.h"

#ifndef KC
#define KC 2048  /* inner block: long k amortizes the C tile loads/stores */
#endif
#ifndef MC
#define MC 4104  /* rows of A per packed block (8 MB at KC): B is repacked per block */
#endif

#ifndef NC
#define NC 512   /* columns of B per packed block: 512 x 2048 bytes in L2 */
#endif
#ifndef PFD
#define PFD 8    /* software prefetch distance of the micro-kernel, in steps of k */
#endif

/* --- scratch buffers, kept across calls: first touch is slow on these VMs --- */
static __thread int8_t *bufA, *bufB;
static __thread size_t capA, capB;

/* Grow a per-thread scratch buffer (kernels.h): 2 MB aligned and huge pages
 * asked for, as the packed panels are walked across many 4 KB pages per
 * micro-kernel call (TLB misses otherwise). */
int lrmpi_scratch(int8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    free(*buf);
    const size_t huge = (size_t)2 << 20, size = (need + huge - 1) / huge * huge;
    *buf = aligned_alloc(huge, size);
#ifdef MADV_HUGEPAGE
    if (*buf)
        madvise(*buf, size, MADV_HUGEPAGE);
#endif
    *cap = *buf ? need : 0;
    return *buf ? 0 : -1;
}

void lrmpi_igemm_clear(int64_t m, int64_t n, int32_t *C, int64_t ldc)
{
    for (int64_t i = 0; i < m; i++)
        memset(C + i * ldc, 0, (size_t)n * 4);
}

/* Pack rows [0, mr) x k-range of A into Ap[k4][MR][4]; rows >= mr and k past
 * the end are zero, so they contribute nothing. rowsum[r] = sum of the row.
 * Whole 4-byte groups move as one 32-bit word (the packed layout interleaves
 * rows in 4-byte units): 4x fewer operations than a byte loop. */
static void pack_a(int MR, int64_t mr, int64_t kc, const int8_t *A, int64_t lda,
                   int8_t *Ap, int32_t *rowsum)
{
    const int64_t k4 = (kc + 3) / 4, kfull = kc / 4;
    for (int r = 0; r < MR; r++) {
        int32_t s = 0;
        if (r < mr) {
            const int8_t *src = A + r * lda;
            for (int64_t p = 0; p < kc; p++)
                s += src[p];
            for (int64_t q = 0; q < kfull; q++) {
                uint32_t w;
                memcpy(&w, src + 4 * q, 4);
                memcpy(Ap + (q * MR + r) * 4, &w, 4);
            }
            for (int64_t q = kfull; q < k4; q++)
                for (int b = 0; b < 4; b++)
                    Ap[(q * MR + r) * 4 + b] = 4 * q + b < kc ? src[4 * q + b] : 0;
        } else {
            for (int64_t q = 0; q < k4; q++)
                memset(Ap + (q * MR + r) * 4, 0, 4);
        }
        rowsum[r] = s;
    }
}

/* Pack columns [0, nr) x k-range of Bt into Bp[k4][NR][4] as B xor 0x80 (or
 * raw when `offset` is 0); padded columns are never stored back. Stores run
 * sequentially (q outer) while the NR source rows are read 4 bytes at a time:
 * their lines stay in L1 for 16 steps of q. */
static void pack_b_scalar(int NR, int64_t nr, int64_t kc, const int8_t *Bt, int64_t ldb,
            int8_t *Bp, int offset)
{
    const int64_t k4 = (kc + 3) / 4, kfull = kc / 4;
    const uint32_t x = offset ? 0x80808080u : 0;
    if (nr == NR) {
        for (int64_t q = 0; q < kfull; q++)
            for (int c = 0; c < NR; c++) {
                uint32_t w;
                memcpy(&w, Bt + c * ldb + 4 * q, 4);
                w ^= x;
                memcpy(Bp + (q * NR + c) * 4, &w, 4);
            }
    } else {
        for (int64_t q = 0; q < kfull; q++)
            for (int c = 0; c < NR; c++) {
                uint32_t w = 0;
                if (c < nr)
                    memcpy(&w, Bt + c * ldb + 4 * q, 4);
                w ^= c < nr ? x : 0;
                memcpy(Bp + (q * NR + c) * 4, &w, 4);
            }
    }
    for (int64_t q = kfull; q < k4; q++) /* the k tail, zero-padded */
        for (int c = 0; c < NR; c++)
            for (int b = 0; b < 4; b++) {
                int64_t p = 4 * q + b;
                int8_t v = (c < nr && p < kc) ? Bt[c * ldb + p] : 0;
                Bp[(q * NR + c) * 4 + b] = (int8_t)((uint8_t)v ^ (c < nr ? (uint8_t)x : 0));
            }
}

/* ========================= AVX-512 VNNI ========================= */
#define V_MR LRMPI_VNNI_MR
#define V_NV (LRMPI_VNNI_NR / 16) /* zmm vectors of 16 int32 lanes per row of the tile */
#define V_NR LRMPI_VNNI_NR

/* The micro-kernel's body, A's 4-byte group (row r, step q) at Ap + r rs + q qs:
 * packed (rs 4, qs MR 4: one stream) or the rows as they are (rs lda, qs 4: MR
 * streams of one block of rows, which the fused layers' units keep in L2) */
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
static inline void ukernel_vnni_body(int64_t k4, const int8_t *Ap, int64_t rs, int64_t qs,
                                     const int8_t *Bp, const int32_t *rowsum, int64_t mr,
                                     int64_t nr, int32_t *C, int64_t ldc)
{
    /* V_MR x V_NV accumulators, fully unrolled so GCC keeps them in zmm
     * registers (checked in the assembly: no spills); they start at the
     * -128*rowsum correction */
    __m512i acc[V_MR][V_NV];
    /* C is far from this core (one pass per block of k): fetch the tile now,
     * it is needed only after the k loop */
    for (int r = 0; r < V_MR && r < mr; r++)
        for (int v = 0; v < V_NV; v++)
            _mm_prefetch((const char *)(C + r * ldc + 16 * v), _MM_HINT_T0);
#pragma GCC unroll 16
    for (int r = 0; r < V_MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < V_NV; v++)
            acc[r][v] = _mm512_set1_epi32(-128 * rowsum[r]);
    /* inner dimension: 4 bytes of k per step */
    for (int64_t q = 0; q < k4; q++) {
        /* both panels stream from L2: ask for them a few steps ahead
         * (+5-8 % measured); prefetches past the panel's end are harmless */
#pragma GCC unroll 4
        for (int v = 0; v < V_NV; v++)
            _mm_prefetch((const char *)(Bp + ((q + PFD) * V_NR + 16 * v) * 4), _MM_HINT_T0);
        if (rs == 4)
            _mm_prefetch((const char *)(Ap + (q + PFD) * qs), _MM_HINT_T0);
        __m512i b[V_NV];
#pragma GCC unroll 4
        for (int v = 0; v < V_NV; v++)
            b[v] = _mm512_load_si512((const void *)(Bp + (q * V_NR + 16 * v) * 4));
        const int8_t *a = Ap + q * qs;
#pragma GCC unroll 16
        for (int r = 0; r < V_MR; r++) {
            int32_t ai;
            memcpy(&ai, a + r * rs, 4);
            const __m512i ar = _mm512_set1_epi32(ai);
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

__attribute__((target("avx512f,avx512bw,avx512vnni")))
void lrmpi_ukernel_vnni(int64_t k4, const int8_t *Ap, const int8_t *Bp,
                         const int32_t *rowsum, int64_t mr, int64_t nr,
                         int32_t *C, int64_t ldc)
{
    ukernel_vnni_body(k4, Ap, 4, V_MR * 4, Bp, rowsum, mr, nr, C, ldc);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
void lrmpi_ukernel_vnni_rows(int64_t k4, const int8_t *A, int64_t lda, const int8_t *Bp,
                              const int32_t *rowsum, int64_t mr, int64_t nr,
                              int32_t *C, int64_t ldc)
{
    ukernel_vnni_body(k4, A, lda, 4, Bp, rowsum, mr, nr, C, ldc);
}

/* The row sums the VNNI micro-kernel's correction needs (-128 sum_k A[i][k]),
 * rows [0, m) of A (k bytes each, lda apart): vpdpbusd with a vector of ones */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
void lrmpi_rowsums_vnni(int64_t m, int64_t k, const int8_t *A, int64_t lda, int32_t *rowsum)
{
    const __m512i ones = _mm512_set1_epi8(1);
    for (int64_t i = 0; i < m; i++) {
        const int8_t *src = A + i * lda;
        __m512i s = _mm512_setzero_si512();
        int64_t p = 0;
        for (; p + 64 <= k; p += 64)
            s = _mm512_dpbusd_epi32(s, ones, _mm512_loadu_si512((const void *)(src + p)));
        if (p < k) {
            const __mmask64 tail = (__mmask64)(~0ULL >> (64 - (k - p)));
            s = _mm512_dpbusd_epi32(s, ones, _mm512_maskz_loadu_epi8(tail, src + p));
        }
        rowsum[i] = _mm512_reduce_add_epi32(s);
    }
}

/* AVX-512 packers: one gather collects the 4-byte groups of 16 rows (columns
 * of B) for one step of k, so packing is a few instructions per 64 bytes
 * instead of a scalar move per 4; the row sums of A come from vpdpbusd with
 * a vector of ones. Gather indices are 32-bit: rows * ld must stay < 2^31. */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
void lrmpi_pack_a_vnni(int MR, int64_t mr, int64_t kc, const int8_t *A, int64_t lda,
                        int8_t *Ap, int32_t *rowsum)
{
    const int64_t k4 = (kc + 3) / 4, kfull = kc / 4;
    const __mmask16 rows = (__mmask16)((1u << (mr < MR ? mr : MR)) - 1);
    const __mmask16 lanes = (__mmask16)((1u << MR) - 1);
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                            11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)lda));
    lrmpi_rowsums_vnni(mr < MR ? mr : MR, kc, A, lda, rowsum);
    for (int r = mr < MR ? (int)mr : MR; r < MR; r++)
        rowsum[r] = 0;
    for (int64_t q = 0; q < kfull; q++) {
        __m512i w = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, idx,
                                                (const void *)(A + 4 * q), 1);
        _mm512_mask_storeu_epi32(Ap + q * MR * 4, lanes, w);
    }
    for (int64_t q = kfull; q < k4; q++) /* the k tail, zero-padded */
        for (int r = 0; r < MR; r++)
            for (int b = 0; b < 4; b++) {
                int64_t p = 4 * q + b;
                Ap[(q * MR + r) * 4 + b] = (r < mr && p < kc) ? A[r * lda + p] : 0;
            }
}

/* Columns [0, nr) x k [0, kc) of Bt -> Bp[q][NR][4] for q < qpad (kernels.h).
 * One gather per 16 columns and step of q; the tail past kc is zero. */
__attribute__((target("avx512f,avx512bw")))
void lrmpi_pack_b_gather(int NR, int64_t nr, int64_t kc, int64_t qpad, const int8_t *Bt,
                         int64_t ldb, int8_t *Bp, uint32_t flip)
{
    const int64_t kfull = kc / 4;
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                            11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)ldb));
    const __m512i x = _mm512_set1_epi32((int)flip);
    for (int v = 0; v < NR / 16; v++) {
        const int64_t left = nr - 16 * v;
        const __mmask16 cols = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
        const int8_t *src = Bt + 16 * v * ldb;
        int8_t *dst = Bp + 64 * v;
        if (cols == 0xFFFF)
            for (int64_t q = 0; q < kfull; q++)
                _mm512_store_si512((void *)(dst + q * NR * 4), _mm512_xor_si512(x,
                    _mm512_i32gather_epi32(idx, (const void *)(src + 4 * q), 1)));
        else
            for (int64_t q = 0; q < kfull; q++)
                _mm512_store_si512((void *)(dst + q * NR * 4), _mm512_xor_si512(x,
                    _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), cols, idx,
                                                (const void *)(src + 4 * q), 1)));
    }
    for (int64_t q = kfull; q < qpad; q++) /* the k tail and any padding, zero */
        for (int c = 0; c < NR; c++)
            for (int b = 0; b < 4; b++) {
                int64_t p = 4 * q + b;
                int8_t v = (c < nr && p < kc) ? Bt[c * ldb + p] : 0;
                Bp[(q * NR + c) * 4 + b] = (int8_t)((uint8_t)v ^ (uint8_t)flip);
            }
}

static void pack_b_vnni(int NR, int64_t nr, int64_t kc, const int8_t *Bt, int64_t ldb,
                        int8_t *Bp, int offset)
{
    (void)offset; /* always offset: vpdpbusd's unsigned operand is B xor 0x80 */
    lrmpi_pack_b_gather(NR, nr, kc, (kc + 3) / 4, Bt, ldb, Bp, 0x80808080u);
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
typedef void (*pack_a_fn)(int, int64_t, int64_t, const int8_t *, int64_t, int8_t *, int32_t *);
typedef void (*pack_b_fn)(int, int64_t, int64_t, const int8_t *, int64_t, int8_t *, int);

static void igemm_blocked(int MR, int NR, int offset, ukernel_fn uk, pack_a_fn pa, pack_b_fn pb,
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
    if (lrmpi_scratch(&bufB, &capB, (size_t)npan * k4max * NR * 4) ||
        lrmpi_scratch(&bufA, &capA, (size_t)mpan * k4max * MR * 4 + (size_t)mpan * MR * 4)) {
        lrmpi_igemm_ref(m, n, k, A, lda, Bt, ldb, C, ldc, 1); /* out of memory: slow, exact */
        return;
    }
    /* each operand is packed once per block of k: all of A's rows (up to MC)
     * first, then B one L2 block (NC columns) at a time against all of them */
    int32_t *rowsum = (int32_t *)(bufA + (size_t)mpan * k4max * MR * 4);
    for (int64_t pc = 0; pc < k; pc += KC) {
        const int64_t kc = k - pc < KC ? k - pc : KC;
        const int64_t k4 = (kc + 3) / 4;
        for (int64_t ic = 0; ic < m; ic += MC) {
            const int64_t mc = m - ic < MC ? m - ic : MC;
            /* pack A: micro-panels of MR rows, with their row sums */
            for (int64_t ip = 0; ip < mc; ip += MR)
                pa(MR, mc - ip < MR ? mc - ip : MR, kc, A + (ic + ip) * lda + pc, lda,
                   bufA + (ip / MR) * k4 * MR * 4, rowsum + ip);
            for (int64_t jc = 0; jc < n; jc += NC) {
                const int64_t nc = n - jc < NC ? n - jc : NC;
                /* pack B: micro-panels of NR columns */
                for (int64_t jp = 0; jp < nc; jp += NR)
                    pb(NR, nc - jp < NR ? nc - jp : NR, kc, Bt + (jc + jp) * ldb + pc, ldb,
                       bufB + (jp / NR) * k4 * NR * 4, offset);
                /* macro-kernel: an A micro-panel stays in L1 while it meets
                 * every B micro-panel of the block (in L2); C is walked along
                 * its rows, which the hardware prefetcher follows */
                for (int64_t ip = 0; ip < mc; ip += MR)
                    for (int64_t jp = 0; jp < nc; jp += NR)
                        uk(k4, bufA + (ip / MR) * k4 * MR * 4, bufB + (jp / NR) * k4 * NR * 4,
                           rowsum + ip, mc - ip, nc - jp, C + (ic + ip) * ldc + jc + jp, ldc);
            }
        }
    }
}

void lrmpi_igemm_avx512(int64_t m, int64_t n, int64_t k, const int8_t *A,
                        int64_t lda, const int8_t *Bt, int64_t ldb, int32_t *C,
                        int64_t ldc, int accumulate)
{
    if (!accumulate)
        lrmpi_igemm_clear(m, n, C, ldc);
    /* the gathers take 32-bit offsets: 16 rows of a huge stride need the scalar packers */
    const int gather_ok = lda < INT32_MAX / 16 && ldb < INT32_MAX / 16;
    igemm_blocked(V_MR, V_NR, 1, lrmpi_ukernel_vnni, gather_ok ? lrmpi_pack_a_vnni : pack_a,
                  gather_ok ? pack_b_vnni : pack_b_scalar, m, n, k, A, lda, Bt, ldb, C, ldc);
}

void lrmpi_igemm_avx2(int64_t m, int64_t n, int64_t k, const int8_t *A,
                      int64_t lda, const int8_t *Bt, int64_t ldb, int32_t *C,
                      int64_t ldc, int accumulate)
{
    if (!accumulate)
        lrmpi_igemm_clear(m, n, C, ldc);
    igemm_blocked(A_MR, A_NR, 0, ukernel_avx2, pack_a, pack_b_scalar, m, n, k, A, lda, Bt, ldb,
                  C, ldc);
}
#endif
