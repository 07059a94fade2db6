/* Fused inference layers: cutting float64 values into digit planes (the
 * nn_quantize kernel, and the next node's planes a fused layer writes), with the
 * sums of squares the bound hook's norms come from. Part of nn_body.h (included
 * there); contracts: kernels.h; the invariant: docs/design.md, Inference. */
#ifndef LRMPI_NN_CUT_H
#define LRMPI_NN_CUT_H

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

#endif
