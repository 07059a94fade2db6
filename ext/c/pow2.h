/* 2^e as a double from its bits: shared by the AVX-512 CRT kernels. */
#ifndef LRMPI_POW2_H
#define LRMPI_POW2_H
#include <stdint.h>

/* 2^e for -1022 <= e <= 1023 (a normal double) */
static inline double pow2(int e)
{
    union { uint64_t u; double d; } b;
    b.u = (uint64_t)(e + 1023) << 52;
    return b.d;
}
#endif
