/* The difference bound's per-sample passes over a linear node's input, fused: what
 * lrmpi/nn/difference.py reads of h at a linear or conv node, in one pass over h (and
 * the estimate D) instead of some twenty numpy passes (kernels.h, "bound passes").
 *
 * Portable C only (no target attribute, no FMA contraction): the results are the same
 * bits on every ISA, and ut is the same bits as numpy's D - dh. Truncation toward
 * zero goes through int64 (cvttsd2si) below 2^52, where it is exact; above, t is an
 * integer already.
 * Scaling by 2^-k and 2^k is exact because the caller only calls with every step
 * 2^k above 2^-1000 (no subnormal result); sums of squares are plain float64 sums,
 * which the caller rounds up for any order (verified._finish). */
#pragma GCC optimize("fp-contract=off")
#include <float.h>
#include <math.h>
#include "kernels.h"

static inline double trunc_step(double x, double inv, double step)
{
    /* Q(x): x truncated toward zero to a multiple of `step` (= 1 / inv, a power of two);
     * from 2^52 on every double is an integer (and NaN, inf pass through) */
    const double t = x * inv;
    return (fabs(t) < 0x1p52 ? (double)(int64_t)t : t) * step;
}

void lrmpi_bound_inputs(int64_t n, int64_t d, const double *h, const double *D,
                        const int32_t *e, int bits, int r, int p, double *ut,
                        double *sums, double *umax)
{
    for (int64_t i = 0; i < n; i++) {
        const double *x = h + i * d, *y = D ? D + i * d : NULL;
        double *u = ut + i * d;
        const double ir = ldexp(1.0, bits * r - e[i]), sr = ldexp(1.0, e[i] - bits * r);
        const double ip = ldexp(1.0, bits * p - e[i]), sp = ldexp(1.0, e[i] - bits * p);
        double shh = 0.0, suu = 0.0, smm = 0.0, m = 0.0;
        for (int64_t j = 0; j < d; j++) {
            const double v = x[j];
            const double dh = v - trunc_step(v, ir, sr);          /* h - Q_r(h), exact */
            const double w = y ? y[j] - dh : -dh;                 /* D - dh, one rounding */
            u[j] = w;
            shh += v * v;
            suu += w * w;
            m = fabs(w) > m && fabs(w) <= DBL_MAX ? fabs(w) : m;  /* as rowmax: finite only */
            if (p > 0 && p != r) {                                /* Q_r(h) - Q_p(h) or back */
                const double dp = v - trunc_step(v, ip, sp);
                const double mid = p < r ? dp - dh : dh - dp;     /* exact: planes between */
                smm += mid * mid;
            }
        }
        sums[3 * i] = shh;
        sums[3 * i + 1] = suu;
        sums[3 * i + 2] = smm;
        umax[i] = m;
    }
}

void lrmpi_residual_sumsq(int64_t n, int64_t d, const double *x, const int32_t *e, int bits,
                          int planes, double *sums)
{
    for (int64_t i = 0; i < n; i++) {
        const double *v = x + i * d;
        const double inv = ldexp(1.0, bits * planes - e[i]), step = ldexp(1.0, e[i] - bits * planes);
        double s = 0.0;
        for (int64_t j = 0; j < d; j++) {
            const double t = v[j] - trunc_step(v[j], inv, step);
            s += t * t;
        }
        sums[i] = s;
    }
}

void lrmpi_bound_relu(int64_t n, int64_t d, const double *x, const double *D, const double *y,
                      double *Dy, double *sums)
{
    for (int64_t i = 0; i < n; i++) {
        const double *a = x + i * d, *b = D + i * d, *c = y + i * d;
        double *o = Dy + i * d;
        double sw = 0.0, sd = 0.0;
        for (int64_t j = 0; j < d; j++) {
            const double w = a[j] - b[j];                 /* one rounding, as numpy's */
            const double f = (w >= 0.0 || w != w) ? w : 0.0;  /* np.maximum(w, 0): NaN kept */
            const double t = c[j] - f;
            o[j] = t;
            sw += w * w;
            sd += t * t;
        }
        sums[2 * i] = sw;
        sums[2 * i + 1] = sd;
    }
}
