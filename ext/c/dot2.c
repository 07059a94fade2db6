/* Compensated dot products (Ogita, Rump, Oishi 2005, "Dot2") for the entries the
 * digit planes cannot carry: the fallback of the last resolution (kernels.h).
 *
 * Portable C only: TwoProduct by Veltkamp/Dekker splitting, TwoSum by Knuth, so
 * the result does not depend on the ISA (no FMA contraction: the pragma below, and
 * this file carries no target attribute). Operands are scaled into (-1, 1) by the
 * powers of two of their row and column first, so no product overflows and the
 * splits cannot overflow either; products that underflow lose at most 2^-1074
 * each, which the caller's bound covers. */
#pragma GCC optimize("fp-contract=off")
#include <math.h>
#include "kernels.h"

#define SPLITTER 134217729.0 /* 2^27 + 1 */

static inline void two_sum(double a, double b, double *s, double *e)
{
    const double x = a + b, z = x - a;
    *s = x;
    *e = (a - (x - z)) + (b - z);
}

static inline void split(double a, double *hi, double *lo)
{
    const double c = SPLITTER * a, x = c - (c - a);
    *hi = x;
    *lo = a - x;
}

static inline void two_product(double a, double b, double *p, double *e)
{
    double ah, al, bh, bl;
    const double x = a * b;
    split(a, &ah, &al);
    split(b, &bh, &bl);
    *p = x;
    *e = al * bl - (((x - ah * bh) - al * bh) - ah * bl);
}

void lrmpi_dot2_ref(int64_t count, int64_t k, const double *A, int64_t lda, const double *B,
                    int64_t ldb, const int64_t *rows, const int64_t *cols,
                    const int32_t *erow, const int32_t *ecol, double *y, double *s)
{
    for (int64_t t = 0; t < count; t++) {
        const double *a = A + rows[t] * lda, *b = B + cols[t];
        /* each scale as two powers of two: 2^-e alone overflows for a subnormal row
         * or column (e down to -1073); every intermediate lies between the value and
         * its scaled one, so the two steps round as the one would */
        const int ea = -erow[rows[t]], eb = -ecol[cols[t]];
        const double sa1 = ldexp(1.0, ea / 2), sa2 = ldexp(1.0, ea - ea / 2);
        const double sb1 = ldexp(1.0, eb / 2), sb2 = ldexp(1.0, eb - eb / 2);
        double sum = 0.0, comp = 0.0, mag = 0.0;
        for (int64_t l = 0; l < k; l++) {
            const double x = a[l] * sa1 * sa2, z = b[l * ldb] * sb1 * sb2;
            double p, q, e;
            two_product(x, z, &p, &q);
            two_sum(sum, p, &sum, &e);
            comp += e + q;
            mag += fabs(p);
        }
        y[t] = sum + comp;
        s[t] = mag;
    }
}
