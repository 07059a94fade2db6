/* int8 GEMM on Intel AMX (TDPBSSD), C += A * Bt^T exactly.
 *
 * AMX multiplies signed by signed bytes into int32 tiles, so unlike vpdpbusd
 * no offset correction is needed; the sums wrap modulo 2^32 like ours and the
 * caller guarantees that the final value fits (kernels.h), so it is exact.
 *
 * Tiles: C 16 x 16 int32, A 16 rows x 64 bytes of k, B 16 rows of "4 bytes of
 * k for each of 16 columns" (the VNNI layout: row q holds Bt[c][4q..4q+3] for
 * c = 0..15, the same 4-byte interleave as the VNNI packer). Eight tile
 * registers allow a 2 x 2 block of C tiles (32 x 32) against two A and two B
 * tiles per 64 of k: 4 loads of 1 KB for 4 TDPBSSD.
 *
 * Blocking (measured on the 2-core Sapphire-Rapids-class VM, one core):
 * A is packed per KC block of k for up to MC rows (zero padded to 32 rows and
 * to 64 of k), B per NC x KC block (1 MB, L2); a pair of A panels (128 KB) stays
 * in L2 while it meets every B panel of the block, and the next C block is
 * prefetched during the k loop. C is the operand that costs: the tiles reach
 * 6.3 TOPS on registers, 3.3-3.8 streaming both operands from L2, but a 32 x 32
 * block of C loaded and stored from memory per k block (its rows a page apart)
 * takes that to 2.1-2.6. Hence KC = 4096 (C once per 4096 of k; was 2048) and,
 * with accumulate = 0, C's first block of k set by zeroed tiles instead of
 * loaded (and the caller's fill with zeros gone): 4096^3 2.0-2.1 -> 2.4-2.6 TOPS,
 * 512 x 1024 x 4096 (a CRT chunk) 1.7-1.9 -> 2.0-2.3, 2048 x 1024 x 8192 1.7-2.0
 * -> 2.0-2.3 (medians of 5, noisy VM); a short k takes a wider B block (below):
 * 8192 x 8192 x 1024 1.49-1.52 -> 1.60-1.63 accumulating (`lrmpi bench kernels`),
 * 1.9-2.1 setting C; against 650-740 GOPS for the AVX-512 VNNI
 * kernel and ~85 GFLOP/s for numpy float64. Tried without gain: software
 * prefetch of the next tiles, TILELOADDT1 for either operand, streaming stores
 * of C, KC = 512-1024, NC = 64-1024, MC = 1024-2048 (all within the noise or
 * slower).
 *
 * The OS must grant the tile state to the process (Linux arch_prctl,
 * lrmpi_amx_enable); dispatch.c asks before it offers this kernel.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include "kernels.h"
#include "gemm_internal.h"

#ifndef AMX_KC
#define AMX_KC 4096 /* k per packed block: C is read and written once per block */
#endif
#ifndef AMX_NC
#define AMX_NC 256  /* columns of B per packed block at least: 256 x 4096 bytes in L2 */
#endif
#ifndef AMX_MC
#define AMX_MC 4096 /* rows of A packed at once (16 MB); B is repacked per block */
#endif

#define TILE 1024   /* bytes of one packed 16 x 64 tile */

typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* scratch kept across calls (first touch is slow on these VMs), per thread */
static __thread int8_t *bufA, *bufB;
static __thread size_t capA, capB;

/* Rows [0, mr) (mr <= 16) x k [0, kc) of A -> one panel Ap[kb][16][64],
 * zero padded past mr rows and past kc. */
static void pack_a(int64_t mr, int64_t kc, const int8_t *A, int64_t lda, int8_t *Ap)
{
    const int64_t nkb = (kc + 63) / 64;
    for (int64_t kb = 0; kb < nkb; kb++) {
        const int64_t len = kc - kb * 64 < 64 ? kc - kb * 64 : 64;
        for (int r = 0; r < 16; r++) {
            int8_t *dst = Ap + kb * TILE + r * 64;
            if (r < mr) {
                memcpy(dst, A + r * lda + kb * 64, (size_t)len);
                memset(dst + len, 0, (size_t)(64 - len));
            } else {
                memset(dst, 0, 64);
            }
        }
    }
}

/* Columns [0, nr) (nr <= 16) x k [0, kc) of Bt -> one panel Bp[q][16][4], raw,
 * with q padded to a multiple of 16 (64 of k) by zeros. */
static void pack_b(int64_t nr, int64_t kc, const int8_t *Bt, int64_t ldb, int8_t *Bp)
{
    lrmpi_pack_b_gather(16, nr, kc, (kc + 63) / 64 * 16, Bt, ldb, Bp, 0);
}

/* `rows` rows of src (of A, or columns of B as rows of Bt) -> panels of 16,
 * padded with zero panels to a multiple of 32 rows (the 2 x 2 tile block). */
typedef void (*pack_fn)(int64_t, int64_t, const int8_t *, int64_t, int8_t *);

static void pack_panels(pack_fn pack, int64_t rows, int64_t kc, const int8_t *src, int64_t ld,
                        int8_t *dst, size_t panel)
{
    for (int64_t p = 0; p < (rows + 31) / 32 * 2; p++) {
        const int64_t r = rows - 16 * p;
        if (r > 0)
            pack(r < 16 ? r : 16, kc, src + 16 * p * ld, ld, dst + p * panel);
        else
            memset(dst + p * panel, 0, panel);
    }
}

/* C[32 x 32] (row stride ldcb bytes) += [A0; A1] * [B0 B1] over nkb steps of
 * 64 of k; `next` (or NULL): the C block to prefetch meanwhile. */
__attribute__((target("amx-tile,amx-int8,sse")))
static void block32(int64_t nkb, const int8_t *A0, const int8_t *A1, const int8_t *B0,
                    const int8_t *B1, int32_t *C, int64_t ldcb, const int32_t *next,
                    int zero)
{
    const int64_t per = (32 + nkb - 1) / nkb; /* rows of `next` to prefetch per step */
    int64_t row = 0;
    char *c = (char *)C;
    if (zero) { /* C := A Bt^T: nothing of C is read */
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    } else {
        _tile_loadd(0, c, ldcb);
        _tile_loadd(1, c + 64, ldcb);
        _tile_loadd(2, c + 16 * ldcb, ldcb);
        _tile_loadd(3, c + 16 * ldcb + 64, ldcb);
    }
    for (int64_t kb = 0; kb < nkb; kb++) {
        _tile_loadd(4, A0 + kb * TILE, 64);
        _tile_loadd(6, B0 + kb * TILE, 64);
        _tile_dpbssd(0, 4, 6);
        _tile_loadd(7, B1 + kb * TILE, 64);
        _tile_dpbssd(1, 4, 7);
        _tile_loadd(5, A1 + kb * TILE, 64);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
        for (int64_t r = 0; next && r < per && row < 32; r++, row++) {
            _mm_prefetch((const char *)next + row * ldcb, _MM_HINT_T0);
            _mm_prefetch((const char *)next + row * ldcb + 64, _MM_HINT_T0);
        }
    }
    _tile_stored(0, c, ldcb);
    _tile_stored(1, c + 64, ldcb);
    _tile_stored(2, c + 16 * ldcb, ldcb);
    _tile_stored(3, c + 16 * ldcb + 64, ldcb);
}

__attribute__((target("amx-tile,amx-int8")))
static void tiles_on(void)
{
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    /* GCC 12 drops the stores above at -O3 (it does not see ldtilecfg read all
     * 64 bytes; ldtilecfg then faults on the half-written config): a barrier */
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile")))
static void tiles_off(void)
{
    _tile_release();
}

void lrmpi_igemm_amx(int64_t m, int64_t n, int64_t k, const int8_t *A, int64_t lda,
                     const int8_t *Bt, int64_t ldb, int32_t *C, int64_t ldc, int accumulate)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) { /* an empty sum */
        if (!accumulate)
            lrmpi_igemm_clear(m, n, C, ldc);
        return;
    }
    const int64_t kc_max = AMX_KC < k ? AMX_KC : k, nkb_max = (kc_max + 63) / 64;
    /* B's block NC x KC near 1 MB (L2): 256 columns at k >= 4096, up to 1024 at a short
     * k, where each C block's load and store weigh more against its fewer steps of k
     * (8192 x 8192 x 1024: 1.45 TOPS with 256, 1.7-2.1 with 1024) */
    int64_t ncb = ((int64_t)1 << 20) / kc_max / 32 * 32;
    ncb = ncb < AMX_NC ? AMX_NC : ncb > 4 * AMX_NC ? 4 * AMX_NC : ncb;
    const int64_t mc_max = AMX_MC < m ? AMX_MC : m, nc_max = ncb < n ? ncb : n;
    const int64_t mpan = (mc_max + 31) / 32 * 2, npan = (nc_max + 31) / 32 * 2;
    /* huge strides (gather offsets) or no memory: the VNNI kernel, also exact */
    if (ldb >= INT32_MAX / 16 ||
        lrmpi_scratch(&bufA, &capA, (size_t)(mpan * nkb_max) * TILE) ||
        lrmpi_scratch(&bufB, &capB, (size_t)(npan * nkb_max) * TILE)) {
        lrmpi_igemm_avx512(m, n, k, A, lda, Bt, ldb, C, ldc, accumulate);
        return;
    }
    int32_t edge[32 * 32]; /* C blocks that cross the edge of C go through here */
    tiles_on();
    for (int64_t pc = 0; pc < k; pc += AMX_KC) {
        const int64_t kc = k - pc < AMX_KC ? k - pc : AMX_KC, nkb = (kc + 63) / 64;
        const size_t panel = (size_t)nkb * TILE;
        const int zero = !accumulate && pc == 0; /* the first block of k sets C */
        for (int64_t ic = 0; ic < m; ic += AMX_MC) {
            const int64_t mc = m - ic < AMX_MC ? m - ic : AMX_MC;
            pack_panels(pack_a, mc, kc, A + ic * lda + pc, lda, bufA, panel);
            for (int64_t jc = 0; jc < n; jc += ncb) {
                const int64_t nc = n - jc < ncb ? n - jc : ncb;
                pack_panels(pack_b, nc, kc, Bt + jc * ldb + pc, ldb, bufB, panel);
                for (int64_t ip = 0; ip < mc; ip += 32)
                    for (int64_t jp = 0; jp < nc; jp += 32) {
                        const int8_t *A0 = bufA + (ip / 16) * panel, *B0 = bufB + (jp / 16) * panel;
                        int32_t *c = C + (ic + ip) * ldc + jc + jp;
                        if (mc - ip >= 32 && nc - jp >= 32) {
                            const int32_t *next = zero ? NULL /* never read */
                                                : jp + 32 < nc ? c + 32
                                                : ip + 32 < mc ? C + (ic + ip + 32) * ldc + jc
                                                : NULL;
                            block32(nkb, A0, A0 + panel, B0, B0 + panel, c, ldc * 4, next,
                                    zero);
                        } else {
                            const int64_t mr = mc - ip < 32 ? mc - ip : 32;
                            const int64_t nr = nc - jp < 32 ? nc - jp : 32;
                            memset(edge, 0, sizeof edge);
                            for (int64_t r = 0; !zero && r < mr; r++)
                                memcpy(edge + r * 32, c + r * ldc, (size_t)nr * 4);
                            block32(nkb, A0, A0 + panel, B0, B0 + panel, edge, 128, NULL, 0);
                            for (int64_t r = 0; r < mr; r++)
                                memcpy(c + r * ldc, edge + r * 32, (size_t)nr * 4);
                        }
                    }
            }
        }
    }
    tiles_off();
}

/* --- the fused layers' product (nn_body.h): level sums of a unit of rows --- */

int64_t lrmpi_nn_amx_size(int planes, int64_t opad, int64_t kpad)
{
    return planes * opad * kpad; /* opad / 16 panels of kpad / 64 tiles of 1 KB */
}

void lrmpi_nn_amx_pack(int planes, int64_t O, int64_t k, int64_t kpad, const int8_t *W,
                       int8_t *out)
{
    const int64_t opad = (O + 31) / 32 * 32;
    for (int q = 0; q < planes; q++)
        for (int64_t j = 0; j < opad; j += 16) /* panels past O are zeros */
            lrmpi_pack_b_gather(16, O - j, k, kpad / 4, W + (q * O + (j < O ? j : 0)) * k, k,
                                out + (q * opad + j) * kpad, 0);
}

/* S[l] (int32, lds) := sum over p + q = l of A_p W_q^T for 32 x 32 blocks of
 * every row block of A (mpad rows, loaded straight from A: no packing) and
 * column block: each level in four C tiles, its pairs' products accumulated
 * there (the caller keeps the sums below 2^31). Columns go in blocks whose
 * weights fit L2 (~1 MB), swept by every row block; a row block of A stays in
 * L1 while it meets the block's columns. */
__attribute__((target("amx-tile,amx-int8")))
void lrmpi_nn_amx_levels(int r, int64_t m, int64_t mpad, int64_t opad, int64_t kpad,
                         const int8_t *A, int64_t lda, int64_t pa, const int8_t *W, int64_t wq,
                         int32_t *S, int64_t lds, int64_t ls)
{
    (void)m;
    const int64_t nkb = kpad / 64, panel = nkb * TILE;
    int64_t nc = ((int64_t)1 << 20) / (kpad * r) / 32 * 32;
    nc = nc < 32 ? 32 : nc > opad ? opad : nc;
    tiles_on();
    for (int64_t jc = 0; jc < opad; jc += nc) {
        const int64_t je = jc + nc < opad ? jc + nc : opad;
        for (int64_t ib = 0; ib < mpad; ib += 32)
            for (int64_t jb = jc; jb < je; jb += 32)
                for (int l = 0; l < 2 * r - 1; l++) {
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                    for (int p = l < r ? 0 : l - r + 1; p <= l && p < r; p++) {
                        const int8_t *A0 = A + p * pa + ib * lda, *A1 = A0 + 16 * lda;
                        const int8_t *B0 = W + (l - p) * wq + (jb / 16) * panel, *B1 = B0 + panel;
                        for (int64_t kb = 0; kb < nkb; kb++) {
                            _tile_loadd(4, A0 + kb * 64, lda);
                            _tile_loadd(6, B0 + kb * TILE, 64);
                            _tile_dpbssd(0, 4, 6);
                            _tile_loadd(7, B1 + kb * TILE, 64);
                            _tile_dpbssd(1, 4, 7);
                            _tile_loadd(5, A1 + kb * 64, lda);
                            _tile_dpbssd(2, 5, 6);
                            _tile_dpbssd(3, 5, 7);
                        }
                    }
                    char *c = (char *)(S + l * ls + ib * lds + jb);
                    _tile_stored(0, c, lds * 4);
                    _tile_stored(1, c + 64, lds * 4);
                    _tile_stored(2, c + 16 * lds * 4, lds * 4);
                    _tile_stored(3, c + 16 * lds * 4 + 64, lds * 4);
                }
    }
    tiles_off();
}

int lrmpi_amx_enable(void)
{
#if defined(__linux__)
    /* ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA: without it the first tile
     * instruction faults (SIGILL). Granted per process; asking again is harmless. */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    return 0;
#endif
}
#endif
