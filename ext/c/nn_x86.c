/* Fused inference layers on AVX-512 (nn_body.h): the level sums by the VNNI
 * micro-kernel against weights packed once per model (igemm_x86.c's panels,
 * B xor 0x80), or on AMX tiles (igemm_amx.c); the rest of the layer (im2col,
 * rounding, bias, activation, the next planes) vectorized with AVX-512. */
#if defined(__x86_64__)
#include <immintrin.h>
#include "bodies.h"

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx512vnni")))

/* nn_peel on AVX-512: 8 values a step, the digits truncated by vcvttpd2dq and
 * narrowed by vpmovdb (|digit| < 2^bits <= 128), the remainders exact; the sums
 * in nn_peel's lanes (one 8-lane accumulator, the tail into lane 0), so the
 * same digits and the same sums on every ISA. */
AVX512 static inline void peel_avx512(int64_t len, const double *x, double s1, double s2,
                                      int bits, int r, int8_t *dst, int64_t pstride, double *sq)
{
    const __m512d v1 = _mm512_set1_pd(s1), v2 = _mm512_set1_pd(s2);
    const __m512d radix = _mm512_set1_pd((double)(1 << bits));
    __m512d ax = _mm512_setzero_pd(), ay = _mm512_setzero_pd();
    int64_t j = 0;
    for (; j + 8 <= len; j += 8) {
        const __m512d xv = _mm512_loadu_pd(x + j);
        __m512d y = _mm512_mul_pd(_mm512_mul_pd(xv, v1), v2);
        for (int p = 0; p < r; p++) {
            const __m256i d = _mm512_cvttpd_epi32(y);
            _mm_storel_epi64((__m128i *)(dst + p * pstride + j), _mm256_cvtepi32_epi8(d));
            y = _mm512_mul_pd(_mm512_sub_pd(y, _mm512_cvtepi32_pd(d)), radix);
        }
        ax = _mm512_add_pd(ax, _mm512_mul_pd(xv, xv));
        ay = _mm512_add_pd(ay, _mm512_mul_pd(y, y));
    }
    double a[8], b[8];
    _mm512_storeu_pd(a, ax);
    _mm512_storeu_pd(b, ay);
    for (; j < len; j++) {
        double y = (x[j] * s1) * s2;
        for (int p = 0; p < r; p++) {
            const int32_t v = (int32_t)y;
            dst[p * pstride + j] = (int8_t)v;
            y = (y - (double)v) * (double)(1 << bits);
        }
        a[0] += x[j] * x[j];
        b[0] += y * y;
    }
    if (sq)
        for (int u = 0; u < 8; u++) {
            sq[0] += a[u];
            sq[1] += b[u];
        }
}
#define NN_PEEL peel_avx512

/* 8 rows of 8 doubles transposed in registers: x[i][j] -> x[j][i]. Pairs of rows
 * interleaved, then 128-bit lanes gathered twice: u[c] holds columns c and c + 4
 * of rows 0-3 (u[c + 4]: of rows 4-7). */
AVX512 static inline void transpose8_avx512(__m512d x[8])
{
    __m512d t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd(x[i], x[i + 1]);     /* columns 0 2 4 6 of rows i, i+1 */
        t[i + 1] = _mm512_unpackhi_pd(x[i], x[i + 1]); /* columns 1 3 5 7 */
    }
    for (int h = 0; h < 8; h += 4) {
        u[h] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0x88);         /* columns 0, 4 */
        u[h + 2] = _mm512_shuffle_f64x2(t[h], t[h + 2], 0xdd);     /* 2, 6 */
        u[h + 1] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0x88); /* 1, 5 */
        u[h + 3] = _mm512_shuffle_f64x2(t[h + 1], t[h + 3], 0xdd); /* 3, 7 */
    }
    for (int c = 0; c < 4; c++) {
        x[c] = _mm512_shuffle_f64x2(u[c], u[c + 4], 0x88);
        x[c + 4] = _mm512_shuffle_f64x2(u[c], u[c + 4], 0xdd);
    }
}

/* The float64 outputs a bound tracker reads (z, y, C, ...) are written past the cache
 * (streaming stores) when one of them is larger than NN_STREAM_BYTES: the tracker reads
 * them after the call, and written through the cache they evicted the layer's own
 * working set (its planes, level sums, the sample's activations). Measured on a 2-core
 * AMX VM (VGG-style, 64 samples a call, z and y asked for): the pass 0.79 -> 0.40 s per
 * 1024 samples, the pass with its bound 2.2-2.4 -> 1.6 s. A run not 64-byte aligned is
 * stored as before. The call ends with an sfence (streaming stores are weakly ordered). */
#define NN_STREAM_BYTES (1 << 21)
static __thread int nn_stream;
#define NN_BEFORE_LAYER(L) \
    (nn_stream = (double)(L)->n * (double)(L)->O * (double)((L)->Ho * (L)->Wo) * 8.0 >= NN_STREAM_BYTES)
#define NN_AFTER_LAYER() _mm_sfence()

AVX512 static inline void store_run(double *d, __m512d x)
{
    if (nn_stream && ((uintptr_t)d & 63) == 0)
        _mm512_stream_pd(d, x);
    else
        _mm512_storeu_pd(d, x);
}

/* nn_store_block (nn_epilogue.h) with whole 64-byte runs: 8 x 8 blocks transposed in
 * registers (the portable version's scalar stores, a channel's run each, took a
 * third of a ResNet-50 pass); the same values in the same places. */
AVX512 static inline void store_block_avx512(double *restrict out, int64_t s, int64_t pos0,
                                             int64_t P, int64_t O, int64_t rb,
                                             const double *restrict v, int64_t ldv)
{
    if (P == 1) { /* each row a sample: contiguous */
        for (int64_t rr = 0; rr < rb; rr++) {
            double *d = out + (s + rr) * O;
            int64_t o = 0;
            for (; o + 8 <= O; o += 8)
                store_run(d + o, _mm512_loadu_pd(v + rr * ldv + o));
            memcpy(d + o, v + rr * ldv + o, (size_t)(O - o) * 8);
        }
        return;
    }
    double *base = out + s * O * P + pos0;
    int64_t o = 0;
    for (; o + 8 <= O; o += 8) {
        int64_t rr = 0;
        for (; rr + 8 <= rb; rr += 8) {
            __m512d x[8];
            for (int i = 0; i < 8; i++)
                x[i] = _mm512_loadu_pd(v + (rr + i) * ldv + o);
            transpose8_avx512(x);
            for (int j = 0; j < 8; j++)
                store_run(base + (o + j) * P + rr, x[j]);
        }
        for (; rr < rb; rr++)
            for (int j = 0; j < 8; j++)
                base[(o + j) * P + rr] = v[rr * ldv + o + j];
    }
    for (; o < O; o++)
        for (int64_t rr = 0; rr < rb; rr++)
            base[o * P + rr] = v[rr * ldv + o];
}

/* nn_load_block likewise: its inverse */
AVX512 static inline void load_block_avx512(const double *restrict in, int64_t s, int64_t pos0,
                                            int64_t P, int64_t O, int64_t rb, double *restrict v,
                                            int64_t ldv)
{
    if (P == 1) {
        for (int64_t rr = 0; rr < rb; rr++)
            memcpy(v + rr * ldv, in + (s + rr) * O, (size_t)O * 8);
        return;
    }
    const double *base = in + s * O * P + pos0;
    int64_t o = 0;
    for (; o + 8 <= O; o += 8) {
        int64_t rr = 0;
        for (; rr + 8 <= rb; rr += 8) {
            __m512d x[8];
            for (int j = 0; j < 8; j++)
                x[j] = _mm512_loadu_pd(base + (o + j) * P + rr);
            transpose8_avx512(x);
            for (int i = 0; i < 8; i++)
                _mm512_storeu_pd(v + (rr + i) * ldv + o, x[i]);
        }
        for (; rr < rb; rr++)
            for (int j = 0; j < 8; j++)
                v[rr * ldv + o + j] = base[(o + j) * P + rr];
    }
    for (; o < O; o++)
        for (int64_t rr = 0; rr < rb; rr++)
            v[rr * ldv + o] = base[o * P + rr];
}
#define NN_STORE_BLOCK store_block_avx512
#define NN_LOAD_BLOCK load_block_avx512
#include "nn_body.h"

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

/* A's planes read as they are (the im2col rows, or a linear node's planes: MR
 * rows of a panel are MR streams of one block, which the unit keeps in L2), with
 * their row sums; every pair of a level added into its sums, a B panel (32
 * columns, in L1/L2) meeting every row panel before the next. Packing A first
 * (a gather per 4 bytes of 12 rows) cost half the micro-kernel's time on
 * 32-64-channel convolutions, whose rows meet only one or two B panels. */
static void levels_vnni(int r, int64_t m, int64_t mpad, int64_t opad, int64_t kpad,
                        const int8_t *A, int64_t lda, int64_t pa, const int8_t *W, int64_t wq,
                        int32_t *S, int64_t lds, int64_t ls)
{
    const int64_t MR = LRMPI_VNNI_MR, NR = LRMPI_VNNI_NR, k4 = kpad / 4;
    const int64_t mpan = (m + MR - 1) / MR, last = (mpan - 1) * MR;
    /* the last panel reads MR rows: past the mpad readable ones, a copy padded
     * with zero rows stands in for it */
    const int copy = last + MR > mpad;
    if (lrmpi_scratch(&vnni_a, &vnni_ca, (size_t)(r * mpan * MR * 4 + (copy ? r * MR * kpad : 0)))) {
        for (int l = 0; l < 2 * r - 1; l++) { /* out of memory: slow but exact */
            memset(S + l * ls, 0, (size_t)(m * lds) * 4);
            for (int p = l < r ? 0 : l - r + 1; p <= l && p < r; p++)
                lrmpi_igemm_ref(m, opad, kpad, A + p * pa, lda, W, kpad, S + l * ls, lds, 1);
        }
        return;
    }
    int32_t *rowsum = (int32_t *)vnni_a;
    int8_t *tail = vnni_a + r * mpan * MR * 4;
    for (int p = 0; p < r; p++) {
        int32_t *rs = rowsum + p * mpan * MR;
        lrmpi_rowsums_vnni(m, kpad, A + p * pa, lda, rs);
        for (int64_t i = m; i < mpan * MR; i++)
            rs[i] = 0;
        if (copy) {
            int8_t *t = tail + p * MR * kpad;
            for (int64_t i = 0; i < MR; i++)
                if (last + i < m)
                    memcpy(t + i * kpad, A + p * pa + (last + i) * lda, (size_t)kpad);
                else
                    memset(t + i * kpad, 0, (size_t)kpad);
        }
    }
    for (int l = 0; l < 2 * r - 1; l++) {
        int32_t *Sl = S + l * ls;
        memset(Sl, 0, (size_t)(m * lds) * 4);
        for (int p = l < r ? 0 : l - r + 1; p <= l && p < r; p++)
            for (int64_t jp = 0; jp < opad; jp += NR) {
                const int8_t *Bp = W + (l - p) * wq + jp * kpad;
                for (int64_t ip = 0; ip < m; ip += MR) {
                    const int t = copy && ip == last;
                    lrmpi_ukernel_vnni_rows(k4, t ? tail + p * MR * kpad : A + p * pa + ip * lda,
                                            t ? kpad : lda, Bp, rowsum + p * mpan * MR + ip,
                                            m - ip, NR, Sl + ip * lds + jp, lds);
                }
            }
    }
}

/* nn_finish_row in one pass: 8 lanes a vector, four vectors of partial sums in
 * the portable version's lane order (nn_sumsq: 32 lanes, the tail into lane 0,
 * then nn_tree32; products and sums rounded separately), so the sums are the
 * same bits on every ISA; max |y| ignores NaN and flags it. `z` in ACT is the
 * activation's input (z + res with a residual); q NULL: no sums wanted. */
#define FINISH_BODY(ACT)                                                                  \
    for (; o + 32 <= O; o += 32)                                                         \
        for (int k = 0; k < 4; k++) {                                                    \
            const __m512d cv = _mm512_loadu_pd(c + o + 8 * k);                           \
            const __m512d zz = _mm512_add_pd(cv, _mm512_loadu_pd(bias + o + 8 * k));     \
            __m512d z = zz;                                                              \
            if (res) {                                                                   \
                const __m512d rv = _mm512_loadu_pd(res + o + 8 * k);                     \
                z = _mm512_add_pd(zz, rv);                                               \
                s[3][k] = _mm512_add_pd(s[3][k], _mm512_mul_pd(rv, rv));                 \
                s[4][k] = _mm512_add_pd(s[4][k], _mm512_mul_pd(z, z));                   \
                _mm512_storeu_pd(res + o + 8 * k, z);                                    \
            }                                                                            \
            const __m512d yv = ACT;                                                      \
            s[0][k] = _mm512_add_pd(s[0][k], _mm512_mul_pd(cv, cv));                     \
            s[1][k] = _mm512_add_pd(s[1][k], _mm512_mul_pd(zz, zz));                     \
            s[2][k] = _mm512_add_pd(s[2][k], _mm512_mul_pd(yv, yv));                     \
            mx = _mm512_max_pd(_mm512_abs_pd(yv), mx); /* NaN: mx stays */               \
            bad |= _mm512_cmp_pd_mask(yv, yv, _CMP_UNORD_Q);                             \
            _mm512_storeu_pd(c + o + 8 * k, zz);                                         \
            _mm512_storeu_pd(y + o + 8 * k, yv);                                         \
        }

AVX512 static double finish_avx512(int act, int64_t O, double *restrict c,
                                   const double *restrict bias, double *restrict res,
                                   const double *restrict slope, double lo, double hi,
                                   double *restrict y, double *q)
{
    __m512d s[5][4], mx = _mm512_setzero_pd();
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < 4; k++)
            s[i][k] = _mm512_setzero_pd();
    const __m512d zero = _mm512_setzero_pd(), vlo = _mm512_set1_pd(lo), vhi = _mm512_set1_pd(hi);
    const __m512d va = _mm512_set1_pd(act == LRMPI_ACT_LEAKY ? slope[0] : 0.0);
    __mmask8 bad = 0;
    int64_t o = 0;
    switch (act) {
    case LRMPI_ACT_RELU: /* z where z >= 0 or NaN, else 0 */
        FINISH_BODY(_mm512_mask_mov_pd(zero, _mm512_cmp_pd_mask(z, zero, _CMP_NLT_UQ), z))
        break;
    case LRMPI_ACT_LEAKY:
        FINISH_BODY(_mm512_mask_mov_pd(_mm512_mul_pd(va, z),
                                       _mm512_cmp_pd_mask(z, zero, _CMP_GE_OQ), z))
        break;
    case LRMPI_ACT_PRELU:
        FINISH_BODY(_mm512_mask_mov_pd(_mm512_mul_pd(_mm512_loadu_pd(slope + o + 8 * k), z),
                                       _mm512_cmp_pd_mask(z, zero, _CMP_GE_OQ), z))
        break;
    case LRMPI_ACT_CLIP: { /* t = z >= lo or NaN ? z : lo; y = t <= hi or NaN ? t : hi */
#define CLIP_T _mm512_mask_mov_pd(vlo, _mm512_cmp_pd_mask(z, vlo, _CMP_NLT_UQ), z)
        FINISH_BODY(_mm512_mask_mov_pd(vhi, _mm512_cmp_pd_mask(CLIP_T, vhi, _CMP_NGT_UQ), CLIP_T))
#undef CLIP_T
        break;
    }
    default:
        FINISH_BODY(z)
    }
    double a[5][32], m[8];
    if (q)
        for (int i = 0; i < 5; i++)
            for (int k = 0; k < 4; k++)
                _mm512_storeu_pd(a[i] + 8 * k, s[i][k]);
    _mm512_storeu_pd(m, mx);
    double big = 0.0;
    for (int u = 0; u < 8; u++)
        big = m[u] > big ? m[u] : big;
    for (; o < O; o++) { /* the tail, as nn_finish_row: lane 0, in order */
        const double cv = c[o], zz = cv + bias[o];
        double z = zz, t[1];
        if (res) {
            if (q)
                a[3][0] += res[o] * res[o];
            z = zz + res[o];
            if (q)
                a[4][0] += z * z;
            res[o] = z;
        }
        nn_act_row(act, 1, &z, t, act == LRMPI_ACT_PRELU ? slope + o : slope, lo, hi);
        if (q) {
            a[0][0] += cv * cv;
            a[1][0] += zz * zz;
            a[2][0] += t[0] * t[0];
        }
        c[o] = zz;
        y[o] = t[0];
        const double v = fabs(t[0]);
        bad |= t[0] != t[0];
        big = v > big ? v : big;
    }
    if (q)
        for (int i = 0; i < 5; i++)
            q[i] = nn_tree32(a[i]);
    return bad || !(big <= DBL_MAX) ? INFINITY : big;
}

LRMPI_NN_VARIANT(avx512, AVX512, levels_vnni, lrmpi_decode_avx512, finish_avx512, vnni_pack,
                 vnni_size, 0)
LRMPI_NN_VARIANT(amx, AVX512, lrmpi_nn_amx_levels, lrmpi_decode_avx512, finish_avx512,
                 lrmpi_nn_amx_pack, lrmpi_nn_amx_size, 64)
#endif
