/* An 8 x 8 byte transpose (SSE2 unpacks): in[t] holds row t's 8 bytes, out[c] gets
 * column c's. Shared by the AVX-512 kernels that store digits or residues of
 * columns of X as rows (crt_residues_avx512.c, encode_t_avx512.c). */
#ifndef LRMPI_TRANSPOSE_H
#define LRMPI_TRANSPOSE_H
#include <immintrin.h>
#include <stdint.h>

static inline void transpose8x8(const uint64_t in[8], uint64_t out[8])
{
    __m128i r[8];
    for (int t = 0; t < 8; t++) r[t] = _mm_cvtsi64_si128((long long)in[t]);
    const __m128i x0 = _mm_unpacklo_epi8(r[0], r[1]), x1 = _mm_unpacklo_epi8(r[2], r[3]);
    const __m128i x2 = _mm_unpacklo_epi8(r[4], r[5]), x3 = _mm_unpacklo_epi8(r[6], r[7]);
    const __m128i y0 = _mm_unpacklo_epi16(x0, x1), y1 = _mm_unpackhi_epi16(x0, x1);
    const __m128i y2 = _mm_unpacklo_epi16(x2, x3), y3 = _mm_unpackhi_epi16(x2, x3);
    const __m128i z[4] = {_mm_unpacklo_epi32(y0, y2), _mm_unpackhi_epi32(y0, y2),
                          _mm_unpacklo_epi32(y1, y3), _mm_unpackhi_epi32(y1, y3)};
    for (int t = 0; t < 4; t++) {
        out[2 * t] = (uint64_t)_mm_cvtsi128_si64(z[t]);
        out[2 * t + 1] = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(z[t], z[t]));
    }
}

#endif
