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

/* thread CPU seconds (the stage timers of lrmpi/stages.py), when asked for */
static inline double nn_clock(const double *times)
{
    if (!times)
        return 0.0;
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* per-thread scratch of one variant (first touch is slow on these VMs: kept) */
typedef struct {
    int8_t *a, *s, *y, *c;
    size_t ca, cs, cy, cc;
} nn_scratch;

#define NN_XB 256 /* pixels of a row transposed at once (NHWC planes) */
#define NN_CB 16  /* channels transposed at once */

/* The r digits of len values x[j] 2^(bits - e) (s1 s2 = that power of two),
 * most significant first, into dst[p pstride + j]: encode_body's arithmetic
 * (exact scaling, truncation toward zero, exact remainders). With `sq`:
 * sq[0] += sum x^2, sq[1] += sum of the scaled remainders squared (what r
 * planes leave of x, times 2^(b (r + 1) - e)), in LANES partial sums. */
LRMPI_INLINE void nn_peel(int64_t len, const double *x, double s1, double s2, int bits, int r,
                          int8_t *dst, int64_t pstride, double *sq)
{
    const double radix = (double)(1 << bits);
    double y[ENC_CHUNK], a[LANES] = {0}, b[LANES] = {0};
    for (int64_t j0 = 0; j0 < len; j0 += ENC_CHUNK) {
        const int64_t n = len - j0 < ENC_CHUNK ? len - j0 : ENC_CHUNK;
        for (int64_t j = 0; j < n; j++)
            y[j] = (x[j0 + j] * s1) * s2;
        for (int p = 0; p < r; p++) {
            int8_t *d = dst + p * pstride + j0;
            for (int64_t j = 0; j < n; j++) {
                const int32_t v = (int32_t)y[j];
                d[j] = (int8_t)v;
                y[j] = (y[j] - (double)v) * radix;
            }
        }
        if (sq) {
            int64_t j = 0;
            for (; j + LANES <= n; j += LANES)
                for (int u = 0; u < LANES; u++) {
                    a[u] += x[j0 + j + u] * x[j0 + j + u];
                    b[u] += y[j + u] * y[j + u];
                }
            for (; j < n; j++) {
                a[0] += x[j0 + j] * x[j0 + j];
                b[0] += y[j] * y[j];
            }
        }
    }
    if (sq)
        for (int u = 0; u < LANES; u++) {
            sq[0] += a[u];
            sq[1] += b[u];
        }
}

/* The ISA's digit cut: nn_peel, or a variant giving the same digits and sums
 * (nn_x86.c defines NN_PEEL before including this file). */
#ifndef NN_PEEL
#define NN_PEEL nn_peel
#endif

/* The sum of 32 partial sums in a fixed tree: the four 8-lane groups added lane by
 * lane ((g0 + g1) + (g2 + g3)), then the 8 lanes pairwise: the AVX-512 row pass
 * (nn_x86.c) adds in the same order, so both give the same bits. */
LRMPI_INLINE double nn_tree32(const double *a)
{
    double t[8];
    for (int u = 0; u < 8; u++)
        t[u] = (a[u] + a[8 + u]) + (a[16 + u] + a[24 + u]);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

/* sum v^2 over a row: 4 LANES partial sums (independent chains, not one add
 * latency per vector), the tail into lane 0, then nn_tree32 */
LRMPI_INLINE double nn_sumsq(int64_t n, const double *v)
{
    double a[4 * LANES] = {0};
    int64_t j = 0;
    for (; j + 4 * LANES <= n; j += 4 * LANES)
        for (int u = 0; u < 4 * LANES; u++)
            a[u] += v[j + u] * v[j + u];
    for (; j < n; j++)
        a[0] += v[j] * v[j];
    return nn_tree32(a);
}

/* Exponent of a sample's planes: max|h| < 2^e, 0 for an all-zero sample. */
LRMPI_INLINE int32_t nn_exponent(double amax)
{
    int e = 0;
    (void)frexp(amax, &e);
    return (int32_t)e;
}

/* Zero the padding of one sample's NHWC image (every plane), around H x W. */
LRMPI_INLINE void nn_zero_border(const lrmpi_nn_planes *P, int8_t *img)
{
    const int64_t C = P->C, row = P->Wp * C;
    for (int p = 0; p < P->r; p++) {
        int8_t *b = img + p * P->pstride;
        if (P->pt)
            memset(b, 0, (size_t)(P->pt * row));
        const int64_t below = P->Hp - P->pt - P->H;
        if (below > 0)
            memset(b + (P->pt + P->H) * row, 0, (size_t)(below * row));
        const int64_t right = P->Wp - P->pl - P->W;
        if (P->pl || right > 0)
            for (int64_t y = P->pt; y < P->pt + P->H; y++) {
                memset(b + y * row, 0, (size_t)(P->pl * C));
                memset(b + y * row + (P->pl + P->W) * C, 0, (size_t)((right > 0 ? right : 0) * C));
            }
    }
}

/* One sample h (NCHW) into padded NHWC planes (nn_cut_sample). */
LRMPI_INLINE void nn_cut_nhwc(const double *h, const lrmpi_nn_planes *P, int64_t s, double s1,
                              double s2, double *sq)
{
    /* NCHW -> padded NHWC: a block of NN_CB channels x NN_XB pixels of one image
     * row peeled into tmp, then written pixel by pixel, channels contiguous */
    int8_t tmp[16][NN_CB][NN_XB];
    int8_t *img = P->D + s * P->Hp * P->Wp * P->C;
    nn_zero_border(P, img);
    const int64_t C = P->C, H = P->H, W = P->W;
    for (int64_t y = 0; y < H; y++)
        for (int64_t c0 = 0; c0 < C; c0 += NN_CB) {
            const int64_t cb = C - c0 < NN_CB ? C - c0 : NN_CB;
            for (int64_t x0 = 0; x0 < W; x0 += NN_XB) {
                const int64_t xb = W - x0 < NN_XB ? W - x0 : NN_XB;
                for (int64_t cc = 0; cc < cb; cc++)
                    NN_PEEL(xb, h + ((c0 + cc) * H + y) * W + x0, s1, s2, P->bits, P->r,
                            &tmp[0][cc][0], NN_CB * NN_XB, sq);
                for (int p = 0; p < P->r; p++) {
                    int8_t *d = img + p * P->pstride + ((y + P->pt) * P->Wp + x0 + P->pl) * C + c0;
                    for (int64_t xx = 0; xx < xb; xx++)
                        for (int64_t cc = 0; cc < cb; cc++)
                            d[xx * C + cc] = tmp[p][cc][xx];
                }
            }
        }
}

/* One sample h (C x H x W, NCHW) into its planes; the exponent is e. */
LRMPI_INLINE void nn_cut_sample(const double *h, int32_t e, const lrmpi_nn_planes *P,
                                int64_t s)
{
    double s1, s2, q[2] = {0.0, 0.0}, *sq = P->sq ? q : NULL;
    pow2_split(P->bits - e, &s1, &s2);
    const int64_t size = P->C * P->H * P->W;
    if (P->layout == LRMPI_NN_ROWS) {
        int8_t *d = P->D + s * P->kpad;
        NN_PEEL(size, h, s1, s2, P->bits, P->r, d, P->pstride, sq);
        for (int p = 0; p < P->r; p++)
            memset(d + p * P->pstride + size, 0, (size_t)(P->kpad - size));
    } else {
        nn_cut_nhwc(h, P, s, s1, s2, sq);
    }
    if (sq) {
        P->sq[2 * s] = q[0];
        P->sq[2 * s + 1] = q[1];
    }
}

LRMPI_INLINE int nn_quantize_body(int64_t n, const void *hv, int f32, const lrmpi_nn_planes *P,
                                  nn_scratch *sc)
{
    const int64_t size = P->C * P->H * P->W;
    double *h64 = NULL;
    if (f32) { /* one sample at a time in float64 (exact), in cache */
        if (lrmpi_scratch(&sc->a, &sc->ca, (size_t)size * 8))
            return -1;
        h64 = (double *)sc->a;
    }
    for (int64_t s = 0; s < n; s++) {
        const double *h = (const double *)hv + s * size;
        if (f32) {
            const float *x = (const float *)hv + s * size;
            for (int64_t j = 0; j < size; j++)
                h64[j] = (double)x[j];
            h = h64;
        }
        double amax;
        if (rowmax_body(1, size, h, size, &amax))
            return 1;
        P->exps[s] = nn_exponent(amax);
        nn_cut_sample(h, P->exps[s], P, s);
    }
    return 0;
}

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

/* y := act(z) over a row, numpy's semantics (NaN propagates): relu is
 * np.maximum(z, 0), leaky/prelu np.where(z >= 0, z, a z), clip
 * np.minimum(np.maximum(z, lo), hi). One loop per kind: each vectorizes. */
LRMPI_INLINE void nn_act_row(int act, int64_t n, const double *restrict z, double *restrict y,
                             const double *slope, double lo, double hi)
{
    switch (act) {
    case LRMPI_ACT_RELU:
        for (int64_t o = 0; o < n; o++)
            y[o] = (z[o] >= 0.0 || z[o] != z[o]) ? z[o] : 0.0;
        break;
    case LRMPI_ACT_LEAKY: {
        const double a = slope[0];
        for (int64_t o = 0; o < n; o++)
            y[o] = z[o] >= 0.0 ? z[o] : a * z[o];
        break;
    }
    case LRMPI_ACT_PRELU:
        for (int64_t o = 0; o < n; o++)
            y[o] = z[o] >= 0.0 ? z[o] : slope[o] * z[o];
        break;
    case LRMPI_ACT_CLIP:
        for (int64_t o = 0; o < n; o++) {
            const double t = (z[o] >= lo || z[o] != z[o]) ? z[o] : lo;
            y[o] = (t <= hi || t != t) ? t : hi;
        }
        break;
    default:
        memcpy(y, z, (size_t)n * 8);
    }
}

/* max |v| over a row, +Inf if it holds NaN or Inf */
LRMPI_INLINE double nn_row_max(int64_t n, const double *v)
{
    double mx[LANES] = {0};
    int bad = 0;
    for (int64_t j = 0; j < n; j++) {
        const double a = fabs(v[j]);
        bad |= !(a <= DBL_MAX);
        mx[j % LANES] = a > mx[j % LANES] ? a : mx[j % LANES];
    }
    double r = 0.0;
    for (int u = 0; u < LANES; u++)
        r = mx[u] > r ? mx[u] : r;
    return bad ? INFINITY : r;
}

/* A row of C (in L1) finished: z = C + bias (written over C), a = z + res (written
 * over res; or a = z without res), y = act(a), the row's sums of C^2, z^2, y^2,
 * res^2, a^2 (q[0..4], nn_sumsq's order) and max |y| (+Inf if y holds NaN or
 * Inf), returned. The portable version in passes (each vectorizes); nn_x86.c has
 * an AVX-512 one pass that gives the same bits. */
typedef double (*nn_finish_fn)(int act, int64_t O, double *restrict c,
                               const double *restrict bias, double *restrict res,
                               const double *restrict slope, double lo, double hi,
                               double *restrict y, double *q);

LRMPI_INLINE double nn_finish_row(int act, int64_t O, double *restrict c,
                                  const double *restrict bias, double *restrict res,
                                  const double *restrict slope, double lo, double hi,
                                  double *restrict y, double *q)
{
    double d[5];
    q = q ? q : d; /* NULL: the sums are not wanted (a pass spared is not worth a branch) */
    q[0] = nn_sumsq(O, c);
    for (int64_t o = 0; o < O; o++)
        c[o] += bias[o];
    q[1] = nn_sumsq(O, c);
    const double *a = c;
    q[3] = q[4] = 0.0;
    if (res) {
        q[3] = nn_sumsq(O, res);
        for (int64_t o = 0; o < O; o++)
            res[o] = c[o] + res[o];
        q[4] = nn_sumsq(O, res);
        a = res;
    }
    nn_act_row(act, O, a, y, slope, lo, hi);
    q[2] = nn_sumsq(O, y);
    return nn_row_max(O, y);
}

#define NN_RB 16 /* rows of the epilogue's block: stored per channel as runs */

/* The inverse of nn_store_block: rb rows of an NCHW array into v[rr ldv + o]. */
LRMPI_INLINE void nn_load_block(const double *restrict in, int64_t s, int64_t pos0, int64_t P,
                                int64_t O, int64_t rb, double *restrict v, int64_t ldv)
{
    if (P == 1) {
        for (int64_t rr = 0; rr < rb; rr++)
            memcpy(v + rr * ldv, in + (s + rr) * O, (size_t)O * 8);
        return;
    }
    const double *base = in + s * O * P + pos0;
    for (int64_t o = 0; o < O; o++)
        for (int64_t rr = 0; rr < rb; rr++)
            v[rr * ldv + o] = base[o * P + rr];
}

/* A block of rb rows (values v[rr ldv + o]) into an NCHW output: with P = 1 each
 * row is a sample (contiguous), else rows are positions pos0.. of sample s,
 * written channel by channel as runs of rb positions. */
LRMPI_INLINE void nn_store_block(double *restrict out, int64_t s, int64_t pos0, int64_t P,
                                 int64_t O, int64_t rb, const double *restrict v, int64_t ldv)
{
    if (P == 1) {
        for (int64_t rr = 0; rr < rb; rr++)
            memcpy(out + (s + rr) * O, v + rr * ldv, (size_t)O * 8);
        return;
    }
    double *base = out + s * O * P + pos0;
    for (int64_t o = 0; o < O; o++)
        for (int64_t rr = 0; rr < rb; rr++)
            base[o * P + rr] = v[rr * ldv + o];
}

/* Whether N 2^(t0 + f) stays a normal double for every channel when |N| < 2^nbits
 * (nonzero N >= 1): then scaling by 2^t is exact. */
static inline int t0_ok(int t0, int fmin, int fmax, int nbits)
{
    return t0 + fmin >= -1022 && t0 + fmax <= 1023 - nbits - 1;
}

/* The exact sums of len values of one sample rounded once (r <= 3, the scale in
 * the normal range for every channel: the caller checked t0_ok), the level sums
 * S + l ls contiguous, f their channels' exponents: nn_round_row's fast paths over
 * a run of rows, with f tiled. */
static inline void nn_round_flat(int r, int bits, int64_t len, const int32_t *S, int64_t ls,
                                 int t0, const int32_t *f, double *c)
{
    const int32_t *s0 = S, *s1 = s0 + ls, *s2 = s1 + ls, *s3 = s2 + ls, *s4 = s3 + ls;
    if (r == 1)
        for (int64_t o = 0; o < len; o++) {
            union { uint64_t u; double d; } p2 = {(uint64_t)(t0 + f[o] + 1023) << 52};
            c[o] = (double)s0[o] * p2.d;
        }
    else if (r == 2)
        for (int64_t o = 0; o < len; o++) {
            const int64_t N = ((int64_t)s0[o] << 2 * bits) + ((int64_t)s1[o] << bits) + s2[o];
            union { uint64_t u; double d; } p2 = {(uint64_t)(t0 + f[o] + 1023) << 52};
            c[o] = (double)N * p2.d;
        }
    else
        for (int64_t o = 0; o < len; o++) {
            const int64_t N = ((int64_t)s0[o] << 4 * bits) + ((int64_t)s1[o] << 3 * bits) +
                              ((int64_t)s2[o] << 2 * bits) + ((int64_t)s3[o] << bits) + s4[o];
            union { uint64_t u; double d; } p2 = {(uint64_t)(t0 + f[o] + 1023) << 52};
            c[o] = (double)N * p2.d;
        }
}

/* The exact sums of row i of a unit rounded once: crow[o] for o < O. */
LRMPI_INLINE void nn_round_row(const lrmpi_nn_layer *L, const int32_t *S, int64_t ls,
                               int64_t opad, int64_t i, int32_t es, int fmin, int fmax,
                               int64_t *limbs, double *crow, lrmpi_decode_fn decode)
{
    const int r = L->r, base = -2 * L->bits * r;
    const int64_t O = L->O;
    const int32_t *f = L->f;
    const int t0 = es + base;
    /* r = 1: |S| < 2^31, S 2^t exact while it stays normal; r = 2, 3: the exact sum
     * fits int64 (|N| < 2^61: |S_l| < 2^31, shifts <= 28), (double)N rounds once (to
     * nearest) and 2^t keeps it normal: the same value as decode() */
    if (r <= 3 && t0_ok(t0, fmin, fmax, r == 1 ? 32 : 61)) {
        nn_round_flat(r, L->bits, O, S + i * opad, ls, t0, f, crow);
        return;
    }
    if (r == 1) {
        const int32_t *s = S + i * opad;
        for (int64_t o = 0; o < O; o++) /* subnormal or huge: one rounding */
            crow[o] = ldexp((double)s[o], t0 + f[o]);
        return;
    }
    memset(limbs, 0, (size_t)(L->nlimbs * opad) * 8);
    for (int l = 0; l < 2 * r - 1; l++) /* level l+1 sits at 2^(bits (2r - 2 - l)) */
        acc_add_body(1, O, limbs, opad, opad, L->nlimbs, S + l * ls + i * opad, 1, opad,
                     L->bits * (2 * r - 2 - l));
    decode(1, O, limbs, opad, opad, L->nlimbs, &es, f, base, crow, opad, NULL);
}

/* The next node's planes N of sample s from its values ys[pos O + o] (P
 * positions of an image Wo wide, O channels last), whose max |y| is amax; 1 if
 * one is NaN or Inf. */
LRMPI_INLINE int nn_cut_next(const lrmpi_nn_planes *N, int64_t s, const double *ys, int64_t P,
                             int64_t Wo, int64_t O, double amax, double *tmp)
{
    if (!(amax <= DBL_MAX))
        return 1;
    const int32_t e = nn_exponent(amax);
    N->exps[s] = e;
    double s1, s2, q[2] = {0.0, 0.0}, *sq = N->sq ? q : NULL;
    pow2_split(N->bits - e, &s1, &s2);
    if (N->layout == LRMPI_NN_ROWS) {
        int8_t *d = N->D + s * N->kpad;
        if (P == 1) {
            NN_PEEL(O, ys, s1, s2, N->bits, N->r, d, N->pstride, sq);
        } else { /* NCHW flattening order: channel-major */
            for (int64_t o = 0; o < O; o++)
                for (int64_t pos = 0; pos < P; pos++)
                    tmp[o * P + pos] = ys[pos * O + o];
            NN_PEEL(O * P, tmp, s1, s2, N->bits, N->r, d, N->pstride, sq);
        }
        for (int p = 0; p < N->r; p++)
            memset(d + p * N->pstride + O * P, 0, (size_t)(N->kpad - O * P));
    } else {
        int8_t *img = N->D + s * N->Hp * N->Wp * O;
        nn_zero_border(N, img);
        for (int64_t pos = 0; pos < P; pos++) {
            const int64_t yy = pos / Wo, xx = pos % Wo;
            NN_PEEL(O, ys + pos * O, s1, s2, N->bits, N->r,
                    img + ((yy + N->pt) * N->Wp + xx + N->pl) * O, N->pstride, sq);
        }
    }
    if (sq) {
        N->sq[2 * s] = q[0];
        N->sq[2 * s + 1] = q[1];
    }
    return 0;
}

/* Max pooling of one sample's activations y (Ho x Wo x O, channels last) into
 * out (pHo x pWo x O): np.maximum over the taps in ONNX's order, a tap outside the
 * image being -inf (ops.pool pads with it). Returns max |out| (+Inf if it holds
 * NaN or Inf). */
LRMPI_INLINE double nn_maxpool(const lrmpi_nn_layer *L, const double *restrict y,
                               double *restrict out)
{
    const int64_t O = L->O, Ho = L->Ho, Wo = L->Wo;
    double big = 0.0;
    int bad = 0;
    for (int64_t oy = 0; oy < L->pHo; oy++)
        for (int64_t ox = 0; ox < L->pWo; ox++) {
            double *m = out + (oy * L->pWo + ox) * O;
            for (int64_t o = 0; o < O; o++)
                m[o] = -INFINITY;
            for (int64_t u = 0; u < L->pkh; u++) {
                const int64_t iy = oy * L->psh + u * L->pdh - L->ppt;
                if (iy < 0 || iy >= Ho)
                    continue; /* -inf: changes no maximum */
                for (int64_t v = 0; v < L->pkw; v++) {
                    const int64_t ix = ox * L->psw + v * L->pdw - L->ppl;
                    if (ix < 0 || ix >= Wo)
                        continue;
                    const double *t = y + (iy * Wo + ix) * O;
                    for (int64_t o = 0; o < O; o++) /* np.maximum(m, t): NaN propagates */
                        m[o] = (m[o] >= t[o] || m[o] != m[o]) ? m[o] : t[o];
                }
            }
            for (int64_t o = 0; o < O; o++) {
                const double a = fabs(m[o]);
                bad |= !(a <= DBL_MAX);
                big = a > big ? a : big;
            }
        }
    return bad ? INFINITY : big;
}

/* f, bias and PReLU slopes repeated for NN_RB rows (the flat epilogue's runs) */
typedef struct {
    int32_t *f;
    double *b, *s;
} nn_tiles;

/* The epilogue of rows [b0, b0 + mb) of a unit (samples from s0) whose level sums
 * are rows 0.. of S: blocks of NN_RB rows (samples, or positions of one sample);
 * a sample's next planes are cut as soon as its last row is done (its rows still
 * in cache). Returns 1 on NaN/Inf in what `next` quantizes. */
LRMPI_INLINE int nn_epilogue(const lrmpi_nn_layer *L, int64_t s0, int64_t b0, int64_t mb,
                             const int32_t *S, int64_t ls, int64_t opad, int fmin, int fmax,
                             double *cblk, double *yblk, double *rblk, int64_t *limbs,
                             double *ybuf,
                             double *smax, double *tmp, double *pbuf, const nn_tiles *tiles,
                             lrmpi_decode_fn decode, nn_finish_fn finish, double *tq)
{
    const int64_t P = L->Ho * L->Wo, O = L->O;
    const double *bias = L->bias;
    for (int64_t i0 = b0; i0 < b0 + mb;) {
        const int64_t pos0 = i0 % P, s = s0 + i0 / P;
        int64_t rb = b0 + mb - i0 < NN_RB ? b0 + mb - i0 : NN_RB;
        if (P > 1 && rb > P - pos0)
            rb = P - pos0;
        /* rows of one sample's positions with O a multiple of 32 are one run: rounded
         * and finished in one call each (per-row overhead dominated convs of 32-64
         * channels) */
        const int t0 = L->e[s] - 2 * L->bits * L->r;
        const int flat = P > 1 && opad == O && L->r <= 3 &&
                         t0_ok(t0, fmin, fmax, L->r == 1 ? 32 : 61);
        if (flat)
            nn_round_flat(L->r, L->bits, rb * O, S + (i0 - b0) * opad, ls, t0, tiles->f, cblk);
        else
            for (int64_t rr = 0; rr < rb; rr++)
                nn_round_row(L, S, ls, opad, i0 + rr - b0, L->e[s0 + (i0 + rr) / P], fmin, fmax,
                             limbs, cblk + rr * opad, decode);
        if (L->Cout)
            nn_store_block(L->Cout, s, pos0, P, O, rb, cblk, opad);
        /* y: the block's rows (P = 1: each a whole sample, cut from L1), or the
         * sample's positions in ybuf (P > 1: pooled and cut once its last one is
         * done) */
        const int keep = (L->next || L->pool) && P > 1;
        double *y = keep ? ybuf + pos0 * O : yblk;
        const int64_t ldy = keep ? O : opad;
        double big[NN_RB], q[NN_RB][5];
        if (L->Res)
            nn_load_block(L->Res, s, pos0, P, O, rb, rblk, opad);
        if (flat && (ldy == O)) { /* cblk becomes z, rblk z + Res */
            big[0] = finish(L->act, rb * O, cblk, tiles->b, L->Res ? rblk : NULL,
                            L->act == LRMPI_ACT_PRELU ? tiles->s : L->slope, L->lo, L->hi, y,
                            L->sq ? q[0] : NULL);
            for (int64_t rr = 1; rr < rb; rr++) { /* the same sample: counted in row 0 */
                big[rr] = 0.0;
                q[rr][0] = q[rr][1] = q[rr][2] = q[rr][3] = q[rr][4] = 0.0;
            }
        } else {
            for (int64_t rr = 0; rr < rb; rr++)
                big[rr] = finish(L->act, O, cblk + rr * opad, bias,
                                 L->Res ? rblk + rr * opad : NULL, L->slope, L->lo, L->hi,
                                 y + rr * ldy, L->sq ? q[rr] : NULL);
        }
        if (L->Zout)
            nn_store_block(L->Zout, s, pos0, P, O, rb, cblk, opad);
        if (L->Aout)
            nn_store_block(L->Aout, s, pos0, P, O, rb, L->Res ? rblk : cblk, opad);
        if (L->Yout)
            nn_store_block(L->Yout, s, pos0, P, O, rb, y, ldy);
        for (int64_t rr = 0; rr < rb; rr++) {
            const int64_t j = (i0 + rr) / P;
            if (L->sq)
                for (int t = 0; t < 5; t++)
                    L->sq[5 * (s0 + j) + t] += q[rr][t];
            if (!L->next && !L->pool)
                continue;
            smax[j] = big[rr] > smax[j] || big[rr] != big[rr] ? big[rr] : smax[j];
            if ((i0 + rr + 1) % P == 0) { /* the sample's last row */
                const double t = nn_clock(tq);
                const double *ys = P > 1 ? ybuf : y + rr * ldy;
                double amax = smax[j];
                int64_t Pn = P, Wn = L->Wo;
                if (L->pool) {
                    amax = nn_maxpool(L, ys, pbuf);
                    ys = pbuf;
                    Pn = L->pHo * L->pWo;
                    Wn = L->pWo;
                    if (L->Pout)
                        nn_store_block(L->Pout, s0 + j, 0, Pn, O, Pn, pbuf, O);
                }
                if (L->next && nn_cut_next(L->next, s0 + j, ys, Pn, Wn, O, amax, tmp))
                    return 1;
                if (tq)
                    *tq += nn_clock(tq) - t;
            }
        }
        i0 += rb;
    }
    return 0;
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
    int fmin = INT_MAX, fmax = INT_MIN;
    for (int64_t o = 0; o < O; o++) {
        fmin = L->f[o] < fmin ? L->f[o] : fmin;
        fmax = L->f[o] > fmax ? L->f[o] : fmax;
    }
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
    double tl = 0.0, tq = 0.0, t_all = nn_clock(L->times);
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
        for (int64_t j = 0; j < ns; j++)
            smax[j] = 0.0;
        for (int64_t b0 = 0; b0 < m; b0 += sb) {
            const int64_t mb = m - b0 < sb ? m - b0 : sb, mbpad = (mb + 31) / 32 * 32;
            const int64_t ls = mbpad * opad;
            t0 = nn_clock(L->times);
            if (L->depthwise)
                nn_depthwise_levels(L, s0, b0, mb, S, opad, ls);
            else if (direct)
                levels(r, mb, mbpad, opad, L->kpad, L->D + (s0 + b0) * L->kpad, L->kpad,
                       L->dstride, L->wpack, wq, S, opad, ls);
            else
                levels(r, mb, mbpad, opad, L->kpad, sc->a + b0 * L->kpad, L->kpad,
                       mpad * L->kpad, L->wpack, wq, S, opad, ls);
            tl += nn_clock(L->times) - t0;
            if (nn_epilogue(L, s0, b0, mb, S, ls, opad, fmin, fmax, cblk, yblk, rblk, limbs,
                            ybuf, smax, tmp, pbuf, &tiles, decode, finish, tqp))
                return 1;
        }
    }
    if (L->times) { /* products, the rest of the layer, the next planes */
        L->times[0] += tl;
        L->times[1] += nn_clock(L->times) - t_all - tl - tq;
        L->times[2] += tq;
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
        return nn_layer_body(L, LEVELS, DECODE, FINISH, &nn_scratch_##NAME, wq, SUB);      \
    }

#endif
