/* Fused inference layers on AVX-512 (nn_body.h): the level sums by the VNNI
 * micro-kernel against weights packed once per model (igemm_x86.c's panels,
 * B xor 0x80), or on AMX tiles (igemm_amx.c); the rest of the layer (im2col,
 * rounding, bias, activation, the next planes) vectorized with AVX-512. */
#if defined(__x86_64__)
#include "nn_body.h"

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx512vnni")))

static __thread int8_t *vnni_a;
static __thread size_t vnni_ca;

static int64_t vnni_size(int planes, int64_t opad, int64_t kpad)
{
    return planes * opad * kpad; /* opad / 32 panels of kpad / 4 steps of 128 bytes */
}

static void vnni_pack(int planes, int64_t O, int64_t k, int64_t kpad, const int8_t *W,
                      int8_t *out)
{
    const int64_t opad = (O + 31) / 32 * 32, NR = LRMPI_VNNI_NR;
    for (int q = 0; q < planes; q++)
        for (int64_t j = 0; j < opad; j += NR)
            lrmpi_pack_b_gather((int)NR, O - j, k, kpad / 4, W + (q * O + j) * k, k,
                                out + (q * opad + j) * kpad, 0x80808080u);
}

/* A's planes packed once per unit (MR-row micro-panels with their row sums),
 * then every pair of a level added into its sums, a B panel (32 columns, in
 * L1/L2) meeting every row panel before the next */
static void levels_vnni(int r, int64_t m, int64_t mpad, int64_t opad, int64_t kpad,
                        const int8_t *A, int64_t lda, int64_t pa, const int8_t *W, int64_t wq,
                        int32_t *S, int64_t lds, int64_t ls)
{
    (void)mpad;
    const int64_t MR = LRMPI_VNNI_MR, NR = LRMPI_VNNI_NR, k4 = kpad / 4;
    const int64_t mpan = (m + MR - 1) / MR, apanel = k4 * MR * 4, aplane = mpan * apanel;
    if (lrmpi_scratch(&vnni_a, &vnni_ca, (size_t)(r * aplane + r * mpan * MR * 4))) {
        for (int l = 0; l < 2 * r - 1; l++) { /* out of memory: slow but exact */
            memset(S + l * ls, 0, (size_t)(m * lds) * 4);
            for (int p = l < r ? 0 : l - r + 1; p <= l && p < r; p++)
                lrmpi_igemm_ref(m, opad, kpad, A + p * pa, lda, W, kpad, S + l * ls, lds);
        }
        return;
    }
    int32_t *rowsum = (int32_t *)(vnni_a + r * aplane);
    for (int p = 0; p < r; p++)
        for (int64_t ip = 0; ip < m; ip += MR)
            lrmpi_pack_a_vnni((int)MR, m - ip < MR ? m - ip : MR, kpad, A + p * pa + ip * lda, lda,
                              vnni_a + p * aplane + (ip / MR) * apanel, rowsum + p * mpan * MR + ip);
    for (int l = 0; l < 2 * r - 1; l++) {
        int32_t *Sl = S + l * ls;
        memset(Sl, 0, (size_t)(m * lds) * 4);
        for (int p = l < r ? 0 : l - r + 1; p <= l && p < r; p++)
            for (int64_t jp = 0; jp < opad; jp += NR) {
                const int8_t *Bp = W + (l - p) * wq + jp * kpad;
                for (int64_t ip = 0; ip < m; ip += MR)
                    lrmpi_ukernel_vnni(k4, vnni_a + p * aplane + (ip / MR) * apanel, Bp,
                                       rowsum + p * mpan * MR + ip, m - ip, NR, Sl + ip * lds + jp,
                                       lds);
            }
    }
}

LRMPI_NN_VARIANT(avx512, AVX512, levels_vnni, lrmpi_decode_avx512, vnni_pack, vnni_size)
LRMPI_NN_VARIANT(amx, AVX512, lrmpi_nn_amx_levels, lrmpi_decode_avx512, lrmpi_nn_amx_pack,
                 lrmpi_nn_amx_size)
#endif
