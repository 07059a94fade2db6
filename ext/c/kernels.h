/* lrmpi native kernels: the contracts.
 *
 * Every kernel here is *unchecked*: lrmpi/numerics/kernels.py validates dtypes, shapes,
 * contiguity and ranges once, then calls through the Cython wrappers. Names follow
 * lrmpi_<op>_<isa> (BLIS style); the dispatcher in dispatch.c picks an ISA at
 * import from CPUID, overridable with LRMPI_KERNEL=ref|avx2|avx512|amx.
 *
 * Conventions: row-major; `ld*` are leading dimensions in elements; int64_t
 * sizes; no aliasing between inputs and outputs unless stated; every kernel
 * returns at once when a size is 0.
 */
#ifndef LRMPI_KERNELS_H
#define LRMPI_KERNELS_H
#include <stddef.h>
#include <stdint.h>

/* Most limbs a multi-limb integer may have (decode's scratch is this long). */
#define LRMPI_MAX_LIMBS 16

/* ------------------------------------------------------------------------- */
/* rowmax:  amax[i] := max_j |X[i,j]|,  returns 1 if any X[i,j] is NaN/Inf.  */
/*   X      m x n float64, leading dimension ldx >= n                          */
/*   amax   m float64 (output)                                                 */
/*   Non-finite entries are skipped in amax; the return value flags them.      */
typedef int (*lrmpi_rowmax_fn)(int64_t m, int64_t n, const double *X,
                               int64_t ldx, double *amax);

/* ------------------------------------------------------------------------- */
/* encode:  split each row of X into `planes` signed digit planes of `bits`    */
/*   bits, most significant first, with per-row power-of-two scale 2^exps[i]:  */
/*     X[i,j] = 2^exps[i] * sum_p D[p,i,j] * 2^(-bits*p) + r,   p = 1..planes  */
/*   sign-magnitude truncation toward zero: every digit has the sign of X[i,j] */
/*   (or is 0) and |r| < 2^(exps[i] - bits*planes).                            */
/*   X      m x n float64, ldx; finite; |X[i,j]| < 2^exps[i] (precondition)    */
/*   exps   m int32, -1100 < exps[i] < 1100                                    */
/*   bits   1..7, so |D| <= 2^bits - 1 <= 127 fits int8                        */
/*   D      planes x m x n int8, contiguous (plane stride m*n, row stride n)   */
/*   sumsq  planes x m int64 (output): sumsq[p,i] = sum_j D[p,i,j]^2           */
/*   l1     m float64 (output): sum_j |X[i,j]| * 2^(bits - exps[i]), the l1   */
/*          norm of the scaled row (values in (-2^bits, 2^bits)), rounded sum  */
typedef void (*lrmpi_encode_fn)(int64_t m, int64_t n, const double *X,
                                int64_t ldx, const int32_t *exps, int bits,
                                int planes, int8_t *D, int64_t *sumsq,
                                double *l1);

/* ------------------------------------------------------------------------- */
/* colmax:  amax[j] := max_i |X[i,j]|,  returns 1 if any X[i,j] is NaN/Inf.  */
/*   X      m x n float64, ldx >= n;  amax  n float64 (output)                 */
typedef int (*lrmpi_colmax_fn)(int64_t m, int64_t n, const double *X,
                               int64_t ldx, double *amax);

/* ------------------------------------------------------------------------- */
/* encode_t:  encode the COLUMNS of X (k x n) as the rows of X^T, without     */
/*   forming X^T: exactly encode(n, k, X^T, ...) (same digits, sumsq; l1 may   */
/*   differ in its last bits: it is summed in another order).                  */
/*   X      k x n float64, ldx >= n; exps n int32 (one per column)             */
/*   D      planes x n x ldd int8 (ldd >= k): row j of plane p at D+p n ldd+j ldd */
/*   sumsq planes x n, l1 n: ADDED to (rows in order: the rows of X may come   */
/*   in blocks, each call continuing the last one's sums, with D advanced by   */
/*   the rows before: the same bits as one call; pass zeros for one call)      */
typedef void (*lrmpi_encode_t_fn)(int64_t k, int64_t n, const double *X,
                                  int64_t ldx, const int32_t *exps, int bits,
                                  int planes, int8_t *D, int64_t ldd,
                                  int64_t *sumsq, double *l1);

/* ------------------------------------------------------------------------- */
/* igemm:  C := C + A * Bt^T   (int8 x int8 -> int32, exact); with             */
/*         accumulate = 0, C := A * Bt^T and C's entries are never read (a     */
/*         caller skips the fill with zeros; AMX then loads no C tile)         */
/*   A      m x k int8, lda >= k                                               */
/*   Bt     n x k int8, ldb >= k (the right operand stored transposed, so both */
/*          operands are contiguous along the inner dimension)                 */
/*   C      m x n int32, ldc >= n; read (accumulate) and written              */
/*   Duty of the CALLER: |C + A*Bt^T| < 2^31 elementwise; for digits <= 127 in */
/*   magnitude and C = 0 on entry that is k <= 133144. The kernel never checks.*/
typedef void (*lrmpi_igemm_fn)(int64_t m, int64_t n, int64_t k,
                               const int8_t *A, int64_t lda,
                               const int8_t *Bt, int64_t ldb,
                               int32_t *C, int64_t ldc, int accumulate);

/* ------------------------------------------------------------------------- */
/* acc_add:  N[i,j] := N[i,j] + S[i,j] * 2^shift   (exact, carry-save)         */
/*   N is a multi-limb integer per element: N = sum_l L[l,i,j] * 2^(32*l),     */
/*   limbs stored plane by plane with limb stride `lstride` (elements), row    */
/*   leading dimension ldl. Limbs are carry-save: any int64 value is allowed,  */
/*   and each call adds less than 2^36 to any limb, so ~2^26 calls are safe.   */
/*   S      m x n int64 (s32 = 0; |S| < 2^62) or int32 (s32 = 1), lds elements */
/*   shift  >= 0; limbs shift/32 and shift/32 + 1 must exist.                  */
typedef void (*lrmpi_acc_add_fn)(int64_t m, int64_t n, int64_t *L,
                                 int64_t ldl, int64_t lstride, int nlimbs,
                                 const void *S, int s32, int64_t lds, int shift);

/* ------------------------------------------------------------------------- */
/* decode:  Y[i,j] := fl( N[i,j] * 2^(erow[i] + ecol[j] + base) )              */
/*   one correctly rounded (to nearest, ties to even) conversion of the exact  */
/*   multi-limb integer N (layout as in acc_add; not modified), including      */
/*   subnormal results; overflow gives +-Inf.                                   */
/*   With nlimbs <= 4 the caller guarantees |N| < 2^126 (a 128-bit fast path). */
/*   erow   m int32 or NULL (0);  ecol  n int32 or NULL (0)                     */
/*   Y      m x n float64, ldy                                                 */
/*   amax   NULL, or (output) max |Y[i,j]| over the tile: the root needs max|C| */
/*          of every resolution, and this saves a pass over C                  */
typedef void (*lrmpi_decode_fn)(int64_t m, int64_t n, const int64_t *L,
                                int64_t ldl, int64_t lstride, int nlimbs,
                                const int32_t *erow, const int32_t *ecol,
                                int base, double *Y, int64_t ldy, double *amax);

/* ------------------------------------------------------------------------- */
/* acc_update:  exact accumulation in a compact state, and decoding, one pass    */
/*   (acc_compact.c). Per entry the exact integer N is F + E: F = fl(N) (double, */
/*   an integer), E = N - F (int32). With S: N += S[i,j] * 2^shift (S int64,    */
/*   |S| < 2^53, or int32 with s32 = 1; lds elements); F and E are updated.      */
/*   With Y: Y[i,j] := fl(N * 2^(erow[i] + ecol[j] + base)), correctly rounded   */
/*   (the same bits as decode of the same N in limbs), amax := max |Y| (or NULL).*/
/*   F, E: m x n with row stride ldf; F = NULL: a zero state, nothing stored     */
/*   (a first level sum decoded alone: then |S 2^shift| < 2^127 suffices);       */
/*   erow/ecol NULL for 0.                                                        */
/*   Duty of the CALLER: |N| < 2^84 for every partial sum, or the state is not   */
/*   exact (accumulate.py keeps the limbs for larger sums).                       */
typedef void (*lrmpi_acc_update_fn)(int64_t m, int64_t n, double *F, int32_t *E,
                                    int64_t ldf, const void *S, int s32, int64_t lds,
                                    int shift, const int32_t *erow, const int32_t *ecol,
                                    int base, double *Y, int64_t ldy, double *amax);
void lrmpi_acc_update_ref(int64_t, int64_t, double *, int32_t *, int64_t, const void *, int,
                          int64_t, int, const int32_t *, const int32_t *, int, double *,
                          int64_t, double *);
void lrmpi_acc_update_avx512(int64_t, int64_t, double *, int32_t *, int64_t, const void *,
                             int, int64_t, int, const int32_t *, const int32_t *, int,
                             double *, int64_t, double *);

/* ------------------------------------------------------------------------- */
/* dot2:  for t < count, with i = rows[t], j = cols[t], in scaled units:       */
/*   y[t] := sum_l (A[i,l] 2^-erow[i]) (B[l,j] 2^-ecol[j])   compensated (Dot2) */
/*   s[t] := sum_l |that product| (plain, rounded)                             */
/*   A      m x k float64 (lda), B k x n float64 (ldb: the row stride of B)    */
/*   erow/ecol: exponents with |A[i,:]| < 2^erow[i], |B[:,j]| < 2^ecol[j], so  */
/*   every scaled operand lies in (-1, 1) and no product or split overflows.   */
/*   Error (Ogita-Rump-Oishi): |y - exact| <= u|exact| + gamma_k^2 s (with     */
/*   u = 2^-53), plus at most 4 * 2^-1074 per term that underflows (the        */
/*   caller's bound adds k 2^-1070). Portable C, one version for every ISA.    */
void lrmpi_dot2_ref(int64_t count, int64_t k, const double *A, int64_t lda, const double *B,
                    int64_t ldb, const int64_t *rows, const int64_t *cols,
                    const int32_t *erow, const int32_t *ecol, double *y, double *s);

/* ------------------------------------------------------------------------- */
/* CRT resolution (Ozaki scheme II), crt.c, portable C:                        */
/* crt_residues: X'[i,c] = trunc(X[i sr + c sc] 2^exps[i]) (|X'| < 2^63 by the  */
/*   caller's scaling); R[l, i, c] = X'[i,c] mod moduli[l] in symmetric range   */
/*   (odd moduli <= 255: |R| <= 127); l1[i] = sum_c |X'[i,c]| (saturating).     */
/*   ldx is unused (strides sr, sc in elements give rows or columns).           */
/* crt_reconstruct: for each (i, j): r_l = S[l splane + i n + j] mod moduli[l], */
/*   N = sum_l r_l coef_l mod M (coef_l = (M/m_l)((M/m_l)^-1 mod m_l), 128-bit  */
/*   as two uint64 words, low first; M likewise, odd, < 2^127), taken in the    */
/*   symmetric range; Y[i,j] = fl(N) 2^-(erow[i] + ecol[j]); amax = max|Y|.      */
/*   Exact integer arithmetic; one rounding (fl) per entry. nmod <= 64.         */
/*   Dispatched (table entry crt_residues): crt.c's portable version, 8        */
/*   elements a vector on AVX-512 (crt_residues_avx512.c; columns gathered);   */
/*   the same integers. crt_residue_row: one row (x[c sc] scaled by 2^e) into  */
/*   R[l plane + c], its l1 into *l1 (the portable body, also for 2^e outside  */
/*   the normal range on AVX-512).                                             */
typedef void (*lrmpi_crt_residues_fn)(int64_t rows, int64_t k, const double *X, int64_t ldx,
                                      int64_t sr, int64_t sc, const int32_t *exps, int nmod,
                                      const int32_t *moduli, int8_t *R, int64_t *l1);
void lrmpi_crt_residues(int64_t rows, int64_t k, const double *X, int64_t ldx,
                        int64_t sr, int64_t sc, const int32_t *exps, int nmod,
                        const int32_t *moduli, int8_t *R, int64_t *l1);
void lrmpi_crt_residues_avx512(int64_t rows, int64_t k, const double *X, int64_t ldx,
                               int64_t sr, int64_t sc, const int32_t *exps, int nmod,
                               const int32_t *moduli, int8_t *R, int64_t *l1);
void lrmpi_crt_residue_row(int64_t k, const double *x, int64_t sc, int e, int nmod,
                           const int32_t *moduli, int8_t *R, int64_t plane, int64_t *l1);
/*   Dispatched (table entry crt_reconstruct): the portable version in crt.c,  */
/*   8 entries a vector on AVX-512 (crt_avx512.c); the same bits.               */
typedef void (*lrmpi_crt_reconstruct_fn)(int64_t m, int64_t n, int nmod, const int32_t *moduli,
                                         const int32_t *S, int64_t splane, const uint64_t *coef,
                                         const uint64_t *Mw, const int32_t *erow,
                                         const int32_t *ecol, double *Y, int64_t ldy,
                                         double *amax);
void lrmpi_crt_reconstruct(int64_t m, int64_t n, int nmod, const int32_t *moduli,
                           const int32_t *S, int64_t splane, const uint64_t *coef,
                           const uint64_t *Mw, const int32_t *erow, const int32_t *ecol,
                           double *Y, int64_t ldy, double *amax);
void lrmpi_crt_reconstruct_avx512(int64_t m, int64_t n, int nmod, const int32_t *moduli,
                                  const int32_t *S, int64_t splane, const uint64_t *coef,
                                  const uint64_t *Mw, const int32_t *erow, const int32_t *ecol,
                                  double *Y, int64_t ldy, double *amax);

/* ------------------------------------------------------------------------- */
/* Fused inference layers (nn_body.h; one variant per ISA, nn_*.c).           */
/*                                                                             */
/* Resolution r of a linear or conv node (docs/design.md, Inference): its      */
/* input h split per sample into r digit planes (2^e_n, truncation toward 0),  */
/* its weights per output channel o into r planes (2^f_o), every pair product  */
/* exact, and                                                                  */
/*   C = fl( sum_{p,q <= r} P_pq 2^(e_n + f_o - b(p+q)) ),  z = C (+) bias_o,   */
/*   y = act(z)                                                                */
/* with ONE rounding of the exact sum (nearest, ties to even: the same bits as */
/* acc_add + decode, and as decode_sum for r = 1), then float64 operations.    */
/* A linear node is a 1x1 convolution of a 1x1 image with C = k channels.      */

/* Digit planes of a batch of per-sample tensors, as a layer reads them.       */
/*   layout ROWS: D[p][n][j], j < kpad, the tensor flattened in NCHW order,    */
/*          zero past its size (kpad: a multiple of 64, the tiles' k).         */
/*   layout NHWC: D[p][n][y][x][c] over the zero-padded image Hp x Wp          */
/*          (the consumer's pads: the image at rows pt.., columns pl..).       */
/* Every plane is `pstride` bytes; rows past n (up to the plane's end) are the */
/* caller's, kept zero (the AMX kernel reads whole 32-row blocks).             */
#define LRMPI_NN_ROWS 0
#define LRMPI_NN_NHWC 1
typedef struct {
    int layout;
    int64_t C, H, W;       /* the tensor: channels, height, width (ROWS: any)  */
    int64_t kpad;          /* ROWS: row length                                 */
    int64_t pt, pl, Hp, Wp;/* NHWC: padding top/left, padded height/width      */
    int r, bits;           /* planes written; bits per digit (1..7)            */
    int8_t *D;             /* r planes                                         */
    int64_t pstride;       /* bytes per plane (>= n x row or image size)       */
    int32_t *exps;         /* n: per-sample exponent, max|h_n| < 2^e (0 if 0)  */
    double *sq;            /* or NULL: n x 2, per sample the float64 sums of    */
                           /* h^2 and of (h - Q_r(h))^2 2^(2 b (r + 1) - 2 e)   */
                           /* (the truncation residual in units of its scale)  */
} lrmpi_nn_planes;

/* nn_quantize: the planes of h (n samples, each C x H x W float64 in NCHW     */
/*   order, contiguous; float32 if f32, exact in float64: no float64 copy)     */
/*   order, contiguous) into `out`: per sample e = frexp(max|h_n|), digits as  */
/*   encode's (every digit has the sign of its value). Returns 1 if h holds    */
/*   NaN or Inf (out is then undefined), else 0.                               */
typedef int (*lrmpi_nn_quantize_fn)(int64_t n, const void *h, int f32,
                                    const lrmpi_nn_planes *out);

/* Activations fused after the bias (numpy's semantics, NaN propagates):       */
/*   RELU max(z, 0); LEAKY z >= 0 ? z : a z (a = slope[0]); PRELU the same     */
/*   with slope[o] per channel; CLIP min(max(z, lo), hi).                      */
#define LRMPI_ACT_NONE 0
#define LRMPI_ACT_RELU 1
#define LRMPI_ACT_LEAKY 2
#define LRMPI_ACT_PRELU 3
#define LRMPI_ACT_CLIP 4

typedef struct {
    int64_t n;                  /* samples                                      */
    /* geometry: the input planes (NHWC layout, padded: Hp x Wp x C; a linear  */
    /* node reads ROWS planes, `direct`: Hp = Wp = kh = kw = 1, C = k)          */
    int64_t Hp, Wp, C, kh, kw, sh, sw, dh, dw, Ho, Wo, O;
    int depthwise;              /* O == C, each output reads its own channel    */
    int direct;                 /* ROWS planes (a linear node): rows read in place */
    int64_t kpad;               /* kh kw C rounded up to 64 (ROWS: the row)     */
    int r, bits, nlimbs;        /* planes used; bits; limbs of the exact sums   */
    const int8_t *D;            /* input planes, plane stride dstride bytes     */
    int64_t dstride;
    const int32_t *e;           /* n per-sample exponents of D                  */
    const int8_t *wpack;        /* the weights packed by nn_pack (this ISA)     */
    int64_t wplanes;            /* planes packed (>= r)                         */
    const int32_t *f;           /* O per-channel exponents of the weights       */
    const double *bias;         /* O                                            */
    int act;                    /* LRMPI_ACT_*                                  */
    const double *slope;        /* LEAKY: [a]; PRELU: O per-channel slopes      */
    double lo, hi;              /* CLIP                                         */
    /* a residual added before the activation: a = z + Res (NCHW, like z), y =   */
    /* act(a), or NULL (a = z)                                                  */
    const double *Res;
    /* outputs, n x O x Ho x Wo float64 (NCHW), each optional (NULL):           */
    double *Cout, *Zout, *Yout; /* the rounded product, + bias, the activation  */
    double *Aout;               /* z + Res                                      */
    /* max pooling of y (ONNX MaxPool: windows pkh x pkw, strides, dilations,   */
    /* pads ppt/ppl: taps outside the image are skipped, like -inf padding) to  */
    /* pHo x pWo per channel, before `next` and into Pout (NCHW), if `pool`     */
    int pool;
    int64_t pkh, pkw, psh, psw, pdh, pdw, ppt, ppl, pHo, pWo;
    double *Pout;
    const lrmpi_nn_planes *next;/* or NULL: y (pooled) quantized for the next node */
    int64_t unit_rows;          /* output rows (positions) per block: L2 size   */
    double *sq;                 /* or NULL: n x 5, per sample the float64 sums   */
                                /* of C^2, z^2, y^2, Res^2, a^2 (its outputs)   */
    double *times;              /* or NULL: += thread CPU seconds in the products,*/
                                /* the rounding to the stores, the next planes  */
    /* The difference bound's estimate (lrmpi/nn/difference.py), if est_p > 0    */
    /* (not depthwise; est_p <= r <= wplanes): Eout (NCHW, like z) =            */
    /* fl(P1 - P2), P1 = Q_p(u) Q_p(W) rounded once (u's p planes Du, D's layout,*/
    /* plane stride ustride, exponents eu; W's planes 1..p, exponents f) and     */
    /* P2 = Q_p(h) W'^T rounded once (D's first p planes; W' = W's planes r+1..  */
    /* r+p packed as nn_pack packs, wres, exponents ef): the values two calls    */
    /* give (P1's C, then P2 with                                                 */
    /* the digits negated and Res = P1), with h's windows read once; its thread   */
    /* CPU seconds += times[3] (times then has 4 entries).                        */
    int est_p;
    const int8_t *Du, *wres;
    int64_t ustride;
    const int32_t *eu, *ef;
    double *Eout;
} lrmpi_nn_layer;

/* nn_packed_size: bytes of nn_pack's output for `planes` planes of O rows of  */
/*   kpad (a multiple of 64) int8 digits (conv: in (u, v, c) order).           */
/* nn_pack: W (planes x O x k int8, row stride k) -> this ISA's layout, k      */
/*   (a conv's rows in ONNX's (c, u, v) order with taps = kh kw > 1: permuted to */
/*   the (u, v, c) order of the windows first)                                  */
/*   zero-padded to kpad and O to a multiple of 32; `out` 64-byte aligned.     */
/*   Depthwise weights (k = kh kw) are packed alike on every ISA.              */
/* nn_layer: the node at resolution L->r for L->n samples: every pair product  */
/*   of the r input and r weight planes (level sums p+q-1 in int32: the caller  */
/*   guarantees r k (2^bits - 1)^2 < 2^31), C, z, y as above, and y's planes   */
/*   for the next node. Returns 1 if y holds NaN or Inf where `next` quantizes */
/*   it, else 0.                                                               */
typedef int64_t (*lrmpi_nn_packed_size_fn)(int planes, int64_t O, int64_t kpad, int depthwise);
typedef void (*lrmpi_nn_pack_fn)(int planes, int64_t O, int64_t k, int64_t kpad,
                                 int depthwise, int64_t taps, const int8_t *W, int8_t *out);
typedef int (*lrmpi_nn_layer_fn)(const lrmpi_nn_layer *L);

/* ------------------------------------------------------------------------- */
/* Registration table (dispatch.c).                                           */
typedef struct {
    const char *isa;             /* "ref", "avx2", "avx512" ...                */
    lrmpi_rowmax_fn rowmax;
    lrmpi_colmax_fn colmax;
    lrmpi_encode_fn encode;
    lrmpi_encode_t_fn encode_t;
    lrmpi_igemm_fn igemm;
    lrmpi_acc_add_fn acc_add;
    lrmpi_decode_fn decode;
    lrmpi_nn_quantize_fn nn_quantize;
    lrmpi_nn_packed_size_fn nn_packed_size;
    lrmpi_nn_pack_fn nn_pack;
    lrmpi_nn_layer_fn nn_layer;
    lrmpi_crt_residues_fn crt_residues;
    lrmpi_crt_reconstruct_fn crt_reconstruct;
    lrmpi_acc_update_fn acc_update;
} lrmpi_kernel_table;

/* The table selected at first call: CPUID, then LRMPI_KERNEL override.       */
const lrmpi_kernel_table *lrmpi_kernels(void);
/* A table by ISA name, or NULL if unknown or unsupported on this CPU.        */
const lrmpi_kernel_table *lrmpi_kernels_for(const char *isa);
/* Comma-separated ISA names usable on this CPU, best last.                   */
const char *lrmpi_kernel_isas(void);
/* Select a table by name; 0 on success, -1 if unknown or unsupported.       */
int lrmpi_set_isa(const char *isa);

/* The portable reference kernels (ref.c), always built and tested.           */
int lrmpi_rowmax_ref(int64_t, int64_t, const double *, int64_t, double *);
void lrmpi_encode_ref(int64_t, int64_t, const double *, int64_t,
                      const int32_t *, int, int, int8_t *, int64_t *, double *);
int lrmpi_colmax_ref(int64_t, int64_t, const double *, int64_t, double *);
void lrmpi_encode_t_ref(int64_t, int64_t, const double *, int64_t,
                        const int32_t *, int, int, int8_t *, int64_t, int64_t *, double *);
void lrmpi_igemm_ref(int64_t, int64_t, int64_t, const int8_t *, int64_t,
                     const int8_t *, int64_t, int32_t *, int64_t, int);
void lrmpi_acc_add_ref(int64_t, int64_t, int64_t *, int64_t, int64_t, int,
                       const void *, int, int64_t, int);
void lrmpi_decode_ref(int64_t, int64_t, const int64_t *, int64_t, int64_t, int,
                      const int32_t *, const int32_t *, int, double *, int64_t, double *);

/* SIMD variants (simd.c); only called when the CPU supports them.           */
int lrmpi_rowmax_avx512(int64_t, int64_t, const double *, int64_t, double *);
void lrmpi_encode_avx512(int64_t, int64_t, const double *, int64_t,
                         const int32_t *, int, int, int8_t *, int64_t *, double *);
int lrmpi_colmax_avx2(int64_t, int64_t, const double *, int64_t, double *);
void lrmpi_encode_t_avx2(int64_t, int64_t, const double *, int64_t,
                         const int32_t *, int, int, int8_t *, int64_t, int64_t *, double *);
int lrmpi_colmax_avx512(int64_t, int64_t, const double *, int64_t, double *);
void lrmpi_encode_t_avx512(int64_t, int64_t, const double *, int64_t,
                           const int32_t *, int, int, int8_t *, int64_t, int64_t *,
                           double *);
void lrmpi_igemm_avx2(int64_t, int64_t, int64_t, const int8_t *, int64_t,
                      const int8_t *, int64_t, int32_t *, int64_t, int);
void lrmpi_igemm_avx512(int64_t, int64_t, int64_t, const int8_t *, int64_t,
                        const int8_t *, int64_t, int32_t *, int64_t, int);
void lrmpi_acc_add_avx512(int64_t, int64_t, int64_t *, int64_t, int64_t, int,
                          const void *, int, int64_t, int);

/* decode on AVX-512 (decode_avx512.c), bit-identical to ref.c.              */
void lrmpi_decode_avx512(int64_t, int64_t, const int64_t *, int64_t, int64_t, int,
                         const int32_t *, const int32_t *, int, double *, int64_t, double *);

void lrmpi_igemm_amx(int64_t, int64_t, int64_t, const int8_t *, int64_t,
                     const int8_t *, int64_t, int32_t *, int64_t, int);

/* Fused inference layers per ISA (nn_ref.c, nn_x86.c).                      */
#define LRMPI_NN_DECLARE(isa)                                                      \
    int lrmpi_nn_quantize_##isa(int64_t, const void *, int, const lrmpi_nn_planes *); \
    int64_t lrmpi_nn_packed_size_##isa(int, int64_t, int64_t, int);               \
    void lrmpi_nn_pack_##isa(int, int64_t, int64_t, int64_t, int, int64_t,         \
                             const int8_t *,                                        \
                             int8_t *);                                            \
    int lrmpi_nn_layer_##isa(const lrmpi_nn_layer *);
LRMPI_NN_DECLARE(ref)
LRMPI_NN_DECLARE(avx2)
LRMPI_NN_DECLARE(avx512)
LRMPI_NN_DECLARE(amx)


/* ------------------------------------------------------------------------- */
/* bound passes (bound_pass.c): the difference bound's reads of a linear node's */
/*   input h (n x d, row-major) and its estimate D (n x d or NULL), one pass:  */
/*     dh = h - Q_r(h), ut := D - dh (or -dh), umax[i] := max_j |ut[i,j]|,      */
/*     sums[3i..3i+2] := sum h^2, sum ut^2, sum mid^2 with mid the planes of h  */
/*     between p and r (Q_r(h) - Q_p(h), or back; 0 when p is 0 or r).          */
/*   Q_k truncates toward zero at the step 2^(e[i] - bits k); the caller      */
/*   guarantees |h[i,j]| < 2^e[i], every step > 2^-1000 and bits k <= 56.      */
/* residual_sumsq: sums[i] := sum_j (x - Q_planes(x))^2, the same conditions.   */
/* bound_relu: at a ReLU y = max(x, 0) with estimate D (all n x d): w = x - D,  */
/*   Dy := y - max(w, 0), sums[2i], sums[2i+1] := sum w^2, sum Dy^2.            */
void lrmpi_bound_inputs(int64_t n, int64_t d, const double *h, const double *D,
                        const int32_t *e, int bits, int r, int p, double *ut,
                        double *sums, double *umax);
void lrmpi_residual_sumsq(int64_t n, int64_t d, const double *x, const int32_t *e, int bits,
                          int planes, double *sums);
void lrmpi_bound_relu(int64_t n, int64_t d, const double *x, const double *D, const double *y,
                      double *Dy, double *sums);
/* bound_relu_inputs: bound_relu then bound_inputs with h = y, D = Dy, in one    */
/*   pass, Dy not stored; sums[5i..5i+4] := sum w^2, sum Dy^2, sum h^2,          */
/*   sum ut^2, sum mid^2 (the same values as the two passes').                   */
void lrmpi_bound_relu_inputs(int64_t n, int64_t d, const double *x, const double *D,
                             const double *y, const int32_t *e, int bits, int r, int p,
                             double *ut, double *sums, double *umax);
/* bound_maxpool: at a max pooling y = maxpool(x) (x n x C x H x W, y n x C x Ho x Wo, */
/*   pool = kh kw sh sw dh dw pt pl Ho Wo) with estimate D of x: w = x - D,           */
/*   Dy := y - maxpool(w) (taps outside the image skipped), sums[2i], sums[2i+1] :=   */
/*   sum w^2 (over x's entries), sum Dy^2; scratch: H W + Wo doubles.                */
void lrmpi_bound_maxpool(int64_t n, int64_t C, int64_t H, int64_t W, const double *x,
                         const double *D, const double *y, const int64_t *pool, double *Dy,
                         double *sums, double *scratch);
/* weight_rows: one pass over a weight matrix W (n x d) for its norms: per row      */
/*   amax[i] := max_j |w| of its finite entries (as rowmax), sabs[i] := sum |w|,  */
/*   ssq[i] := sum w^2; cols[j] += |w[i,j]| over the rows (sums in some order);    */
/*   returns 1 if W holds NaN/Inf.                                                 */
int lrmpi_weight_rows(int64_t n, int64_t d, const double *W, double *amax, double *sabs,
                      double *ssq, double *cols);

#endif
