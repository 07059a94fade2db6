/* Fused inference layers: the bodies every ISA variant instantiates (nn_ref.c,
 * nn_x86.c), as bodies.h does for the other kernels. Contracts: kernels.h
 * (nn_quantize, nn_pack, nn_layer); the invariant: docs/design.md, Inference.
 *
 * A layer call walks its output rows (the positions of whole samples) in units
 * sized for L2: im2col of the unit's windows from the channels-last input
 * planes (a linear node's rows are its planes), every level sum
 * S_l = sum_{p+q-1=l} A_p W_q^T in int32 by the ISA's product (`levels`), then
 * one pass per row: the exact sum rounded once (r = 1: S 2^t, exact, or
 * ldexp's one rounding; r > 1: carry-save limbs and the ISA's decode, the same
 * kernels as ExactAccumulator), bias, activation, the outputs asked for, and
 * the row kept for the next node's planes, which are cut per sample once its
 * unit is done. No float64 array between layers unless the caller asks.
 */
#ifndef LRMPI_NN_BODY_H
#define LRMPI_NN_BODY_H
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bodies.h"
#include "gemm_internal.h"
#include "kernels.h"
#undef MR /* bodies.h's igemm block, expanded there already: free the names */
#undef NR

/* The level sums of a unit (int32): S[l][i][j] = sum over pairs p + q = l
 * (0-based planes) of A_p[i] . W_q[j] over kpad, for i < m (mpad rows of A
 * readable: their sums are dropped), j < opad; A_p at A + p pa, rows lda apart;
 * W as this ISA's nn_pack wrote it, wq bytes a plane. */
typedef void (*nn_levels_fn)(int r, int64_t m, int64_t mpad, int64_t opad, int64_t kpad,
                             const int8_t *A, int64_t lda, int64_t pa, const int8_t *W,
                             int64_t wq, int32_t *S, int64_t lds, int64_t ls);

/* The stage timers of lrmpi/stages.py, when asked for: a layer call's thread CPU
 * seconds (CLOCK_THREAD_CPUTIME_ID, a system call of ~1 us here: read twice a
 * call), split between its stages in the proportions of a cheap wall clock
 * (CLOCK_MONOTONIC, vDSO, ~0.1 us) read around every sub-block: thread CPU
 * clocks there cost 12-15 % of an MLP or VGG pass. */
static inline double nn_clock_of(const double *times, clockid_t id)
{
    if (!times)
        return 0.0;
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline double nn_clock(const double *times)
{
    return nn_clock_of(times, CLOCK_MONOTONIC);
}

/* per-thread scratch of one variant (first touch is slow on these VMs: kept) */
typedef struct {
    int8_t *a, *s, *y, *c, *u, *e;
    size_t ca, cs, cy, cc, cu, ce;
} nn_scratch;

#include "nn_cut.h"
#include "nn_epilogue.h"

/* im2col of rows [0, m) of a unit (samples from s0) into A (r planes of mpad rows
 * of kpad, pa bytes apart): row (sample, y, x) holds the window in (u, v, c)
 * order, the weights' column order; the k tail and rows m.. are zeroed. */
LRMPI_INLINE void nn_im2col(const lrmpi_nn_layer *L, int64_t s0, int64_t m, int64_t mpad,
                            int8_t *A, int64_t pa)
{
    const int64_t C = L->C, P = L->Ho * L->Wo, img = L->Hp * L->Wp * C;
    const int64_t k = L->kh * L->kw * C, run = L->kw * C;
    for (int p = 0; p < L->r; p++) {
        const int8_t *D = L->D + p * L->dstride;
        for (int64_t i = 0; i < m; i++) {
            const int64_t s = s0 + i / P, pos = i % P, y = pos / L->Wo, x = pos % L->Wo;
            int8_t *dst = A + p * pa + i * L->kpad;
            for (int64_t u = 0; u < L->kh; u++) {
                const int8_t *src = D + s * img + ((y * L->sh + u * L->dh) * L->Wp + x * L->sw) * C;
                if (L->dw == 1) { /* the kw taps of a window row are contiguous */
                    if (run >= 32)
                        memcpy(dst + u * run, src, (size_t)run);
                    else
                        for (int64_t j = 0; j < run; j++)
                            dst[u * run + j] = src[j];
                } else {
                    for (int64_t v = 0; v < L->kw; v++)
                        memcpy(dst + (u * L->kw + v) * C, src + v * L->dw * C, (size_t)C);
                }
            }
            memset(dst + k, 0, (size_t)(L->kpad - k));
        }
        memset(A + p * pa + m * L->kpad, 0, (size_t)((mpad - m) * L->kpad));
    }
}

/* Depthwise level sums: each output channel reads its own input channel; the
 * packed weights are [q][tap][opad] int8 (nn_pack). Vectorized over channels. */
LRMPI_INLINE void nn_depthwise_levels(const lrmpi_nn_layer *L, int64_t s0, int64_t b0,
                                      int64_t m, int32_t *S, int64_t opad, int64_t ls)
{
    const int64_t C = L->C, P = L->Ho * L->Wo, img = L->Hp * L->Wp * C;
    const int64_t taps = L->kh * L->kw, O = L->O;
    const int r = L->r;
    for (int64_t i = 0; i < m; i++) { /* row b0 + i of the unit, row i of S */
        const int64_t s = s0 + (b0 + i) / P, pos = (b0 + i) % P;
        const int64_t y = pos / L->Wo, x = pos % L->Wo;
        for (int l = 0; l < 2 * r - 1; l++)
            memset(S + l * ls + i * opad, 0, (size_t)opad * 4);
        for (int p = 0; p < r; p++)
            for (int q = 0; q < r; q++) {
                int32_t *dst = S + (p + q) * ls + i * opad;
                for (int64_t u = 0; u < L->kh; u++)
                    for (int64_t v = 0; v < L->kw; v++) {
                        const int8_t *src = L->D + p * L->dstride + s * img +
                                            ((y * L->sh + u * L->dh) * L->Wp + x * L->sw +
                                             v * L->dw) * C;
                        const int8_t *w = L->wpack + (q * taps + u * L->kw + v) * opad;
                        for (int64_t o = 0; o < O; o++)
                            dst[o] += (int32_t)src[o] * (int32_t)w[o];
                    }
            }
    }
}

static inline void nn_frange(const int32_t *f, int64_t O, int *lo, int *hi)
{
    *lo = INT_MAX;
    *hi = INT_MIN;
    for (int64_t o = 0; o < O; o++) {
        *lo = f[o] < *lo ? f[o] : *lo;
        *hi = f[o] > *hi ? f[o] : *hi;
    }
}

/* The estimate's rows [b0, b0 + mb) of a unit (kernels.h est_p): P1's sums S1
 * rounded as Lu's product, P2's S2 as Lh's, E = fl(P1 - P2) stored like z. c1, c2
 * hold NN_RB rows of opad. */
LRMPI_INLINE void nn_estimate_rows(const lrmpi_nn_layer *Lu, const lrmpi_nn_layer *Lh,
                                   int64_t s0, int64_t b0, int64_t mb, const int32_t *S1,
                                   const int32_t *S2, int64_t ls, int64_t opad, const int fr[4],
                                   double *c1, double *c2, int64_t *limbs,
                                   lrmpi_decode_fn decode)
{
    const int64_t P = Lu->Ho * Lu->Wo, O = Lu->O;
    for (int64_t i0 = b0; i0 < b0 + mb;) {
        const int64_t pos0 = i0 % P, s = s0 + i0 / P;
        int64_t rb = b0 + mb - i0 < NN_RB ? b0 + mb - i0 : NN_RB;
        if (P > 1 && rb > P - pos0)
            rb = P - pos0;
        for (int64_t rr = 0; rr < rb; rr++) {
            const int64_t i = i0 + rr - b0, j = s0 + (i0 + rr) / P;
            double *a = c1 + rr * opad, *b = c2 + rr * opad;
            nn_round_row(Lu, S1, ls, opad, i, Lu->e[j], fr[0], fr[1], limbs, a, decode);
            nn_round_row(Lh, S2, ls, opad, i, Lh->e[j], fr[2], fr[3], limbs, b, decode);
            for (int64_t o = 0; o < O; o++)
                a[o] -= b[o];
        }
        NN_STORE_BLOCK(Lu->Eout, s, pos0, P, O, rb, c1, opad);
        i0 += rb;
    }
}

/* `sub`: rows per call of the product, each followed by its epilogue while its
 * level sums are in cache (0: the whole unit at once, for products that pack
 * the weights per call). */
LRMPI_INLINE int nn_layer_body(const lrmpi_nn_layer *L, nn_levels_fn levels,
                               lrmpi_decode_fn decode, nn_finish_fn finish, nn_scratch *sc,
                               int64_t wq, int64_t sub)
{
    const int r = L->r, nlev = 2 * r - 1;
    const int64_t P = L->Ho * L->Wo, O = L->O, opad = (O + 31) / 32 * 32;
    const int direct = L->direct;
    int64_t per = L->unit_rows / P > 0 ? L->unit_rows / P : 1; /* samples per unit */
    if (direct) /* units start on 32-row blocks of the planes */
        per = per < 32 ? 32 : per / 32 * 32;
    const int64_t mmax = per * P, mpad_max = (mmax + 31) / 32 * 32;
    const int64_t sb = sub > 0 && sub < mpad_max ? sub : mpad_max; /* a multiple of 32 */
    const size_t need_a = direct || L->depthwise ? 64 : (size_t)r * mpad_max * L->kpad;
    /* a sample's activations (P > 1, for the next planes or the pooling), a
     * transpose, the pooled sample, the maxima */
    const int64_t PP = L->pool ? L->pHo * L->pWo : 0;
    const int64_t PM = P > PP ? P : PP;
    const size_t need_y = (size_t)(((L->next || L->pool) && P > 1 ? (P + PM + PP) * O : 0)
                                   + per) * 8;
    if (lrmpi_scratch(&sc->a, &sc->ca, need_a) ||
        lrmpi_scratch(&sc->s, &sc->cs, (size_t)nlev * sb * opad * 4) ||
        lrmpi_scratch(&sc->y, &sc->cy, need_y) ||
        lrmpi_scratch(&sc->c, &sc->cc, (size_t)(opad * (L->nlimbs + 6 * NN_RB)) * 8))
        return -1;
    int fmin, fmax;
    nn_frange(L->f, O, &fmin, &fmax);
    /* the estimate's two products (est_p): r = p, u's planes for P1, W's planes r+1..
     * (wres) for P2; their level sums and u's windows in scratch of their own */
    const int ep = L->est_p, nle = 2 * ep - 1;
    lrmpi_nn_layer Lu = *L, Lh = *L;
    int fr[4] = {fmin, fmax, 0, 0};
    if (ep > 0) {
        if (lrmpi_scratch(&sc->u, &sc->cu, direct ? 64 : (size_t)ep * mpad_max * L->kpad) ||
            lrmpi_scratch(&sc->e, &sc->ce, (size_t)2 * nle * sb * opad * 4))
            return -1;
        Lu.r = Lh.r = ep;
        Lu.D = L->Du, Lu.dstride = L->ustride, Lu.e = L->eu;
        Lh.f = L->ef;
        nn_frange(L->ef, O, &fr[2], &fr[3]);
    }
    int32_t *S1 = (int32_t *)sc->e, *S2 = S1 + nle * sb * opad;
    double *cblk = (double *)sc->c, *yblk = cblk + NN_RB * opad, *rblk = yblk + NN_RB * opad;
    int64_t *limbs = (int64_t *)sc->c + 6 * NN_RB * opad;
    nn_tiles tiles = {(int32_t *)(rblk + NN_RB * opad), rblk + 2 * NN_RB * opad,
                      rblk + 3 * NN_RB * opad};
    for (int64_t rr = 0; rr < NN_RB; rr++)
        for (int64_t o = 0; o < O; o++) {
            tiles.f[rr * O + o] = L->f[o];
            tiles.b[rr * O + o] = L->bias[o];
            tiles.s[rr * O + o] = L->act == LRMPI_ACT_PRELU ? L->slope[o] : 0.0;
        }
    double *smax = (double *)sc->y, *ybuf = smax + per, *tmp = ybuf + P * O;
    double *pbuf = tmp + PM * O;
    double tl = 0.0, tq = 0.0, te = 0.0, t_all = nn_clock(L->times);
    const double cpu_all = nn_clock_of(L->times, CLOCK_THREAD_CPUTIME_ID);
    double *tqp = L->times ? &tq : NULL;
    int32_t *S = (int32_t *)sc->s;
    if (L->sq)
        memset(L->sq, 0, (size_t)(5 * L->n) * 8);
    for (int64_t s0 = 0; s0 < L->n; s0 += per) {
        const int64_t ns = L->n - s0 < per ? L->n - s0 : per, m = ns * P;
        const int64_t mpad = (m + 31) / 32 * 32;
        double t0 = nn_clock(L->times);
        if (!direct && !L->depthwise)
            nn_im2col(L, s0, m, mpad, sc->a, mpad * L->kpad);
        tl += nn_clock(L->times) - t0;
        if (ep > 0 && !direct) {
            t0 = nn_clock(L->times);
            nn_im2col(&Lu, s0, m, mpad, sc->u, mpad * L->kpad);
            te += nn_clock(L->times) - t0;
        }
        for (int64_t j = 0; j < ns; j++)
            smax[j] = 0.0;
        for (int64_t b0 = 0; b0 < m; b0 += sb) {
            const int64_t mb = m - b0 < sb ? m - b0 : sb, mbpad = (mb + 31) / 32 * 32;
            const int64_t ls = mbpad * opad;
            /* h's rows of the block: the planes in place (direct) or their windows; the
             * estimate's u~ alike */
            const int64_t row0 = direct ? s0 + b0 : b0, pw = mpad * L->kpad;
            const int8_t *Ah = (direct ? L->D : sc->a) + row0 * L->kpad;
            const int64_t ph = direct ? L->dstride : pw;
            t0 = nn_clock(L->times);
            if (L->depthwise)
                nn_depthwise_levels(L, s0, b0, mb, S, opad, ls);
            else
                levels(r, mb, mbpad, opad, L->kpad, Ah, L->kpad, ph, L->wpack, wq, S, opad, ls);
            tl += nn_clock(L->times) - t0;
            if (nn_epilogue(L, s0, b0, mb, S, ls, opad, fmin, fmax, cblk, yblk, rblk, limbs,
                            ybuf, smax, tmp, pbuf, &tiles, decode, finish, tqp))
                return 1;
            if (ep > 0) { /* the same rows' estimate: h's windows still in cache */
                t0 = nn_clock(L->times);
                levels(ep, mb, mbpad, opad, L->kpad, (direct ? L->Du : sc->u) + row0 * L->kpad,
                       L->kpad, direct ? L->ustride : pw, L->wpack, wq, S1, opad, ls);
                levels(ep, mb, mbpad, opad, L->kpad, Ah, L->kpad, ph, L->wres, wq, S2, opad, ls);
                nn_estimate_rows(&Lu, &Lh, s0, b0, mb, S1, S2, ls, opad, fr, cblk, rblk, limbs,
                                 decode);
                te += nn_clock(L->times) - t0;
            }
        }
    }
    if (L->times) { /* products, the rest of the layer, the next planes, the estimate */
        const double cpu = nn_clock_of(L->times, CLOCK_THREAD_CPUTIME_ID) - cpu_all;
        const double wall = nn_clock(L->times) - t_all;
        const double k = wall > 0.0 ? cpu / wall : 0.0; /* tl + tq + te <= wall */
        L->times[0] += k * tl;
        const double rest = cpu - k * tl - k * tq - k * te;
        L->times[1] += rest > 0.0 ? rest : 0.0;
        L->times[2] += k * tq;
        if (ep > 0)
            L->times[3] += k * te;
    }
    return 0;
}

/* Packing shared by the ISAs whose product reads plain rows (ref, avx2) and by
 * depthwise weights everywhere: [q][o][kpad] (or [q][tap][opad]), zero-padded. */
LRMPI_INLINE void nn_pack_plain(int planes, int64_t O, int64_t k, int64_t kpad, int depthwise,
                                const int8_t *W, int8_t *out)
{
    const int64_t opad = (O + 31) / 32 * 32;
    if (depthwise) {
        memset(out, 0, (size_t)(planes * k * opad));
        for (int q = 0; q < planes; q++)
            for (int64_t o = 0; o < O; o++)
                for (int64_t t = 0; t < k; t++)
                    out[(q * k + t) * opad + o] = W[(q * O + o) * k + t];
        return;
    }
    memset(out, 0, (size_t)(planes * opad * kpad));
    for (int q = 0; q < planes; q++)
        for (int64_t o = 0; o < O; o++)
            memcpy(out + (q * opad + o) * kpad, W + (q * O + o) * k, (size_t)k);
}

/* rows of k = C x taps digits in (c, tap) order -> a new buffer in (tap, c) order
 * (free() it); NULL without memory (the caller then packs as it was given). */
static inline int8_t *nn_permute_taps(int64_t rows, int64_t k, int64_t taps, const int8_t *W)
{
    int8_t *t = malloc((size_t)(rows * k));
    if (!t)
        return NULL;
    const int64_t C = k / taps;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t u = 0; u < taps; u++)
                t[i * k + u * C + c] = W[i * k + c * taps + u];
    return t;
}

/* An ISA may prepare and end a layer call's stores (nn_x86.c: streaming stores) */
#ifndef NN_BEFORE_LAYER
#define NN_BEFORE_LAYER(L) ((void)(L))
#define NN_AFTER_LAYER() ((void)0)
#endif

/* One ISA's four entry points: NAME's body compiled under ATTR (a target list,
 * or nothing), its product LEVELS, DECODE (r > 1) and FINISH of a row, packing
 * PACK/PSIZE for dense weights, SUB rows per product call (nn_layer_body). */
#define LRMPI_NN_VARIANT(NAME, ATTR, LEVELS, DECODE, FINISH, PACK, PSIZE, SUB)             \
    static __thread nn_scratch nn_scratch_##NAME;                                          \
    ATTR int lrmpi_nn_quantize_##NAME(int64_t n, const void *h, int f32,                  \
                                      const lrmpi_nn_planes *P)                            \
    {                                                                                      \
        return nn_quantize_body(n, h, f32, P, &nn_scratch_##NAME);                         \
    }                                                                                      \
    int64_t lrmpi_nn_packed_size_##NAME(int planes, int64_t O, int64_t kpad, int depthwise) \
    {                                                                                      \
        const int64_t opad = (O + 31) / 32 * 32;                                           \
        return depthwise ? planes * kpad * opad : PSIZE(planes, opad, kpad);               \
    }                                                                                      \
    void lrmpi_nn_pack_##NAME(int planes, int64_t O, int64_t k, int64_t kpad, int depthwise,\
                              int64_t taps, const int8_t *W, int8_t *out)                  \
    {                                                                                      \
        if (depthwise) {                                                                   \
            nn_pack_plain(planes, O, k, k, 1, W, out);                                     \
        } else if (taps > 1) { /* (c, u, v) -> (u, v, c), row by row */                   \
            int8_t *t = nn_permute_taps(planes * O, k, taps, W);                           \
            PACK(planes, O, k, kpad, t ? t : W, out);                                      \
            free(t);                                                                       \
        } else {                                                                           \
            PACK(planes, O, k, kpad, W, out);                                              \
        }                                                                                  \
    }                                                                                      \
    ATTR int lrmpi_nn_layer_##NAME(const lrmpi_nn_layer *L)                                \
    {                                                                                      \
        const int64_t opad = (L->O + 31) / 32 * 32;                                        \
        const int64_t wq = L->depthwise ? L->kh * L->kw * opad : PSIZE(1, opad, L->kpad);  \
        NN_BEFORE_LAYER(L);                                                                \
        const int status = nn_layer_body(L, LEVELS, DECODE, FINISH, &nn_scratch_##NAME,   \
                                         wq, SUB);                                         \
        NN_AFTER_LAYER();                                                                  \
        return status;                                                                     \
    }

#endif
