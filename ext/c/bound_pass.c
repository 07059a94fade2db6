/* The difference bound's per-sample passes over a linear node's input, fused: what
 * lrmpi/nn/difference.py reads of h at a linear or conv node, in one pass over h (and
 * the estimate D) instead of some twenty numpy passes (kernels.h, "bound passes").
 *
 * Portable C only (no target attribute, no FMA contraction): the results are the same
 * bits on every ISA, and ut / Dy are the same bits as numpy's D - dh / y - max(w, 0).
 * Truncation toward zero is done in float arithmetic, so that the compiler can vectorise
 * it with any SIMD: below 2^52, |t| rounded to an integer by adding and subtracting 2^52
 * (exact), minus 1 where that rounded up; from 2^52 on every double is an integer (and
 * NaN, inf pass through). Scaling by 2^-k and 2^k is exact because the caller only
 * calls with every step 2^k and its inverse normal (no subnormal result). Sums of
 * squares go into LANES partial sums (a vector's worth, the same order on every ISA),
 * which the caller rounds up for any order of summation (verified._finish). */
/* -ffp-contract=off comes from setup.py (every C source) */
#include <float.h>
#include <math.h>
#include "kernels.h"

#define LANES 8
/* vectorised for the widest SIMD the CPU has (GCC picks the clone at load time); every
 * clone computes the same operations in the same order, so the same bits */
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

/* for j in 0..d-1, k = j mod LANES: full chunks (a fixed trip count the compiler
 * vectorises), then the rest */
#define FOR_LANES(d, BODY) do { \
        int64_t j0 = 0; \
        for (; j0 + LANES <= (d); j0 += LANES) \
            for (int k = 0; k < LANES; k++) { const int64_t j = j0 + k; BODY } \
        for (int k = 0; j0 + k < (d); k++) { const int64_t j = j0 + k; BODY } \
    } while (0)

static inline double trunc_step(double x, double inv, double step)
{
    /* Q(x): x truncated toward zero to a multiple of `step` (= 1 / inv, a power of two) */
    const double t = x * inv, a = fabs(t);
    double r = (a + 0x1p52) - 0x1p52;   /* a rounded to the nearest integer (a < 2^52) */
    r = r > a ? r - 1.0 : r;            /* ... toward zero */
    r = a < 0x1p52 ? r : a;             /* an integer already (or NaN, inf) */
    return copysign(r, t) * step;
}

static inline double lanes_sum(const double *s)
{
    double t = 0.0;
    for (int k = 0; k < LANES; k++)
        t += s[k];
    return t;
}

/* The end of an input pass's row: the squares of the planes of x between p and r
 * (Q_r(x) - Q_p(x) if p < r, else back; exact; a second loop, the row in cache) if
 * `mid`, then sums[0..2] := the lanes' sums of h^2, ut^2, mid^2 and *umax := max |ut| */
static inline void inputs_row_end(const double *x, int64_t d, double ir, double sr, double ip,
                                  double sp, int mid, int below, const double *shh,
                                  const double *suu, double *smm, const double *m,
                                  double *sums, double *umax)
{
    if (mid)
        FOR_LANES(d, {
            const double v = x[j];
            const double dh = v - trunc_step(v, ir, sr);
            const double dp = v - trunc_step(v, ip, sp);
            const double md = below ? dp - dh : dh - dp;
            smm[k] += md * md;
        });
    double mx = 0.0;
    for (int k = 0; k < LANES; k++)
        mx = m[k] > mx ? m[k] : mx;
    sums[0] = lanes_sum(shh);
    sums[1] = lanes_sum(suu);
    sums[2] = lanes_sum(smm);
    *umax = mx;
}

CLONES void lrmpi_bound_inputs(int64_t n, int64_t d, const double *h, const double *D,
                        const int32_t *e, int bits, int r, int p, double *ut,
                        double *sums, double *umax)
{
    const int mid = p > 0 && p != r;
    for (int64_t i = 0; i < n; i++) {
        const double *x = h + i * d, *y = D ? D + i * d : NULL;
        double *u = ut + i * d;
        const double ir = ldexp(1.0, bits * r - e[i]), sr = ldexp(1.0, e[i] - bits * r);
        const double ip = ldexp(1.0, bits * p - e[i]), sp = ldexp(1.0, e[i] - bits * p);
        double shh[LANES] = {0}, suu[LANES] = {0}, smm[LANES] = {0}, m[LANES] = {0};
        /* two loops, with and without D (a load under a condition is not vectorised),
         * then the planes between p and r in a loop of their own (the row is in cache) */
#define INPUTS_BODY(UT) { \
            const double v = x[j]; \
            const double dh = v - trunc_step(v, ir, sr);       /* h - Q_r(h), exact */ \
            const double t = (UT);                             /* D - dh: one rounding */ \
            const double at = fabs(t); \
            const double fin = at <= DBL_MAX ? at : 0.0;       /* as rowmax: finite only */ \
            u[j] = t; \
            shh[k] += v * v; \
            suu[k] += t * t; \
            m[k] = fin > m[k] ? fin : m[k]; \
        }
        if (y)
            FOR_LANES(d, INPUTS_BODY(y[j] - dh));
        else
            FOR_LANES(d, INPUTS_BODY(-dh));
#undef INPUTS_BODY
        inputs_row_end(x, d, ir, sr, ip, sp, mid, p < r, shh, suu, smm, m, sums + 3 * i,
                       umax + i);
    }
}

CLONES void lrmpi_residual_sumsq(int64_t n, int64_t d, const double *x, const int32_t *e, int bits,
                          int planes, double *sums)
{
    for (int64_t i = 0; i < n; i++) {
        const double *v = x + i * d;
        const double inv = ldexp(1.0, bits * planes - e[i]), step = ldexp(1.0, e[i] - bits * planes);
        double s[LANES] = {0};
        FOR_LANES(d, {
            const double t = v[j] - trunc_step(v[j], inv, step);
            s[k] += t * t;
        });
        sums[i] = lanes_sum(s);
    }
}

CLONES void lrmpi_bound_relu(int64_t n, int64_t d, const double *x, const double *D, const double *y,
                      double *Dy, double *sums)
{
    for (int64_t i = 0; i < n; i++) {
        const double *a = x + i * d, *b = D + i * d, *c = y + i * d;
        double *o = Dy + i * d;
        double sw[LANES] = {0}, sd[LANES] = {0};
        FOR_LANES(d, {
            const double v = a[j] - b[j];                     /* one rounding, as numpy's */
            const double f = (v >= 0.0 || v != v) ? v : 0.0;  /* np.maximum(v, 0): NaN kept */
            const double t = c[j] - f;
            o[j] = t;
            sw[k] += v * v;
            sd[k] += t * t;
        });
        sums[2 * i] = lanes_sum(sw);
        sums[2 * i + 1] = lanes_sum(sd);
    }
}

/* A ReLU whose output y is a linear node's input h, the two passes in one
 * (lrmpi_bound_relu, then lrmpi_bound_inputs with D = Dy): Dy is not stored, and
 * every value and partial sum is the two passes' own (the same operations, the same
 * lanes). sums[5i..5i+4] := sum w^2, sum Dy^2, sum h^2, sum ut^2, sum mid^2. */
CLONES void lrmpi_bound_relu_inputs(int64_t n, int64_t d, const double *x, const double *D,
                                    const double *y, const int32_t *e, int bits, int r, int p,
                                    double *ut, double *sums, double *umax)
{
    const int mid = p > 0 && p != r;
    for (int64_t i = 0; i < n; i++) {
        const double *a = x + i * d, *b = D + i * d, *c = y + i * d;
        double *u = ut + i * d;
        const double ir = ldexp(1.0, bits * r - e[i]), sr = ldexp(1.0, e[i] - bits * r);
        const double ip = ldexp(1.0, bits * p - e[i]), sp = ldexp(1.0, e[i] - bits * p);
        double sw[LANES] = {0}, sd[LANES] = {0}, shh[LANES] = {0}, suu[LANES] = {0};
        double smm[LANES] = {0}, m[LANES] = {0};
        FOR_LANES(d, {
            const double v = a[j] - b[j];                     /* w: one rounding */
            const double f = (v >= 0.0 || v != v) ? v : 0.0;  /* np.maximum(v, 0) */
            const double dy = c[j] - f;                       /* Dy */
            const double h = c[j];
            const double dh = h - trunc_step(h, ir, sr);      /* h - Q_r(h), exact */
            const double t = dy - dh;                         /* ut = Dy - dh */
            const double at = fabs(t);
            const double fin = at <= DBL_MAX ? at : 0.0;
            u[j] = t;
            sw[k] += v * v;
            sd[k] += dy * dy;
            shh[k] += h * h;
            suu[k] += t * t;
            m[k] = fin > m[k] ? fin : m[k];
        });
        sums[5 * i] = lanes_sum(sw);
        sums[5 * i + 1] = lanes_sum(sd);
        inputs_row_end(c, d, ir, sr, ip, sp, mid, p < r, shh, suu, smm, m, sums + 5 * i + 2,
                       umax + i);
    }
}

CLONES void lrmpi_bound_maxpool(int64_t n, int64_t C, int64_t H, int64_t W, const double *x,
                                const double *D, const double *y, const int64_t *pool,
                                double *Dy, double *sums, double *scratch)
{
    /* pool: kh kw sh sw dh dw pt pl Ho Wo (ONNX MaxPool geometry; a tap outside the
     * image reads -inf in ops.pool, which changes no maximum: skipped). Per channel,
     * w's plane once into scratch, then each output row's maxima tap by tap over the
     * run of outputs whose tap is inside (branch-free loops that vectorise) */
    const int64_t kh = pool[0], kw = pool[1], sh = pool[2], sw = pool[3], dh = pool[4];
    const int64_t dw = pool[5], pt = pool[6], pl = pool[7], Ho = pool[8], Wo = pool[9];
    const int64_t d = C * H * W, e = C * Ho * Wo;
    double *w = scratch, *m = w + H * W;
    for (int64_t i = 0; i < n; i++) {
        const double *a = x + i * d, *b = D + i * d, *c = y + i * e;
        double *o = Dy + i * e;
        double sw2[LANES] = {0}, sd[LANES] = {0};
        for (int64_t ch = 0; ch < C; ch++) {
            const double *ac = a + ch * H * W, *bc = b + ch * H * W;
            FOR_LANES(H * W, {
                const double v = ac[j] - bc[j];               /* w: one rounding, as numpy's */
                w[j] = v;
                sw2[k] += v * v;
            });
            for (int64_t oy = 0; oy < Ho; oy++) {
                for (int64_t ox = 0; ox < Wo; ox++)
                    m[ox] = -INFINITY;
                for (int64_t u = 0; u < kh; u++) {
                    const int64_t iy = oy * sh + u * dh - pt;
                    if (iy < 0 || iy >= H)
                        continue;
                    const double *wr = w + iy * W;
                    for (int64_t v = 0; v < kw; v++) {
                        const int64_t off = v * dw - pl; /* ix = ox sw + off in [0, W) */
                        const int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
                        const int64_t hi = W - 1 - off < 0 ? 0 : (W - 1 - off) / sw + 1;
                        const int64_t end = hi < Wo ? hi : Wo;
                        for (int64_t ox = lo; ox < end; ox++) {
                            const double t = wr[ox * sw + off];
                            /* np.maximum(m, t): NaN kept, a tie gives t (-0 vs +0) */
                            m[ox] = (m[ox] != m[ox] || m[ox] > t) ? m[ox] : t;
                        }
                    }
                }
                const double *cr = c + (ch * Ho + oy) * Wo;
                double *orow = o + (ch * Ho + oy) * Wo;
                for (int64_t ox = 0; ox < Wo; ox++)
                    orow[ox] = cr[ox] - m[ox];
            }
        }
        FOR_LANES(e, {
            const double t = o[j];
            sd[k] += t * t;
        });
        sums[2 * i] = lanes_sum(sw2);
        sums[2 * i + 1] = lanes_sum(sd);
    }
}

CLONES int lrmpi_weight_rows(int64_t n, int64_t d, const double *W, double *amax, double *sabs,
                             double *ssq, double *restrict cols)
{
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const double *restrict w = W + i * d;   /* cols is not W: the loop vectorises */
        double m[LANES] = {0}, sa[LANES] = {0}, sq[LANES] = {0};
        FOR_LANES(d, {
            const double v = w[j];
            const double at = fabs(v);
            m[k] = at > m[k] ? at : m[k];
            sa[k] += at;
            sq[k] += v * v;
            cols[j] += at;
        });
        double mx = 0.0;
        for (int k = 0; k < LANES; k++)
            mx = m[k] > mx ? m[k] : mx;
        sabs[i] = lanes_sum(sa);
        ssq[i] = lanes_sum(sq);
        if (!(sabs[i] <= DBL_MAX)) {   /* NaN/Inf in the row, or a sum past DBL_MAX: look */
            mx = 0.0;
            for (int64_t j = 0; j < d; j++) {
                const double at = fabs(w[j]);
                if (at <= DBL_MAX)
                    mx = at > mx ? at : mx;   /* as rowmax: finite entries only */
                else
                    bad = 1;
            }
        }
        amax[i] = mx;
    }
    return bad;
}
