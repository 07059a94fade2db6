/* Fused inference layers: the epilogue of a block of output rows (the one
 * rounding, bias, residual, activation, stores, max pooling, the next planes).
 * Part of nn_body.h (included there after nn_cut.h); the invariant:
 * docs/design.md, Inference. */
#ifndef LRMPI_NN_EPILOGUE_H
#define LRMPI_NN_EPILOGUE_H

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

/* The inverse of nn_store_block: rb rows of an NCHW array into v[rr ldv + o]. An
 * ISA may give its own (NN_LOAD_BLOCK, NN_STORE_BLOCK: the same values moved). */
LRMPI_INLINE void nn_load_block_c(const double *restrict in, int64_t s, int64_t pos0, int64_t P,
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
LRMPI_INLINE void nn_store_block_c(double *restrict out, int64_t s, int64_t pos0, int64_t P,
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

#ifndef NN_STORE_BLOCK
#define NN_STORE_BLOCK nn_store_block_c
#define NN_LOAD_BLOCK nn_load_block_c
#endif

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
            NN_STORE_BLOCK(L->Cout, s, pos0, P, O, rb, cblk, opad);
        /* y: the block's rows (P = 1: each a whole sample, cut from L1), or the
         * sample's positions in ybuf (P > 1: pooled and cut once its last one is
         * done) */
        const int keep = (L->next || L->pool) && P > 1;
        double *y = keep ? ybuf + pos0 * O : yblk;
        const int64_t ldy = keep ? O : opad;
        double big[NN_RB], q[NN_RB][5];
        if (L->Res)
            NN_LOAD_BLOCK(L->Res, s, pos0, P, O, rb, rblk, opad);
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
            NN_STORE_BLOCK(L->Zout, s, pos0, P, O, rb, cblk, opad);
        if (L->Aout)
            NN_STORE_BLOCK(L->Aout, s, pos0, P, O, rb, L->Res ? rblk : cblk, opad);
        if (L->Yout)
            NN_STORE_BLOCK(L->Yout, s, pos0, P, O, rb, y, ldy);
        /* the next planes' time, read once per block that ends a sample (per
         * sample, the clock reads cost more than an MLP row's cut) */
        const int ends = (L->next || L->pool) && (i0 + rb) / P > i0 / P;
        const double t = ends ? nn_clock(tq) : 0.0;
        for (int64_t rr = 0; rr < rb; rr++) {
            const int64_t j = (i0 + rr) / P;
            if (L->sq)
                for (int t = 0; t < 5; t++)
                    L->sq[5 * (s0 + j) + t] += q[rr][t];
            if (!L->next && !L->pool)
                continue;
            smax[j] = big[rr] > smax[j] || big[rr] != big[rr] ? big[rr] : smax[j];
            if ((i0 + rr + 1) % P == 0) { /* the sample's last row */
                const double *ys = P > 1 ? ybuf : y + rr * ldy;
                double amax = smax[j];
                int64_t Pn = P, Wn = L->Wo;
                if (L->pool) {
                    amax = nn_maxpool(L, ys, pbuf);
                    ys = pbuf;
                    Pn = L->pHo * L->pWo;
                    Wn = L->pWo;
                    if (L->Pout)
                        NN_STORE_BLOCK(L->Pout, s0 + j, 0, Pn, O, Pn, pbuf, O);
                }
                if (L->next && nn_cut_next(L->next, s0 + j, ys, Pn, Wn, O, amax, tmp))
                    return 1;
            }
        }
        if (ends && tq)
            *tq += nn_clock(tq) - t;
        i0 += rb;
    }
    return 0;
}

#endif
