/* Internals shared by the GEMM kernels (igemm_x86.c, igemm_amx.c) and the
 * dispatcher; not part of the kernel contracts in kernels.h. */
#ifndef LRMPI_GEMM_INTERNAL_H
#define LRMPI_GEMM_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

/* Per-thread scratch of the GEMMs (igemm_x86.c): grows *buf to `need` bytes
 * (kept across calls, 2 MB aligned); 0, or -1 without memory.              */
int lrmpi_scratch(int8_t **buf, size_t *cap, size_t need);

/* C := 0 (m x n, row stride ldc): igemm's accumulate = 0 where a kernel has no
 * path of its own for it (igemm_x86.c). */
void lrmpi_igemm_clear(int64_t m, int64_t n, int32_t *C, int64_t ldc);

/* B's packer for both GEMMs (igemm_x86.c, AVX-512): columns [0, nr) x k       */
/* [0, kc) of Bt -> Bp[q][NR][4] (4 bytes of k per column, NR a multiple of 16) */
/* for q < qpad, every byte XORed with `flip` (0x80808080: the unsigned operand */
/* of vpdpbusd; 0 for AMX); past kc and nr it packs zeros (XORed too: they meet */
/* zeros of A). Gather offsets are 32-bit: 16 * ldb < 2^31.                     */
void lrmpi_pack_b_gather(int cols, int64_t nr, int64_t kc, int64_t qpad, const int8_t *Bt,
                         int64_t ldb, int8_t *Bp, uint32_t flip);

/* The VNNI micro-kernel and A packer (igemm_x86.c), also for the fused layers  */
/* (nn_x86.c): an MR x NR tile of C += A Bt^T from A packed as Ap[k4][MR][4]    */
/* with its row sums and B as Bp[k4][NR][4] XOR 0x80 (B's packer, flip 0x80808080);*/
/* rows >= mr and columns >= nr are not stored. Bp 64-byte aligned.            */
#define LRMPI_VNNI_MR 12
#define LRMPI_VNNI_NR 32
void lrmpi_ukernel_vnni(int64_t k4, const int8_t *Ap, const int8_t *Bp, const int32_t *rowsum,
                        int64_t mr, int64_t nr, int32_t *C, int64_t ldc);
void lrmpi_pack_a_vnni(int rows, int64_t mr, int64_t kc, const int8_t *A, int64_t lda,
                       int8_t *Ap, int32_t *rowsum);
/* The same tile from A's rows as they are (A[i][4q..4q+3] at A + i lda + 4 q: no
 * packing; rows mr.. of the MR are read, so they must be readable) with the
 * row sums of lrmpi_rowsums_vnni (rows [0, m) of k bytes).                   */
void lrmpi_ukernel_vnni_rows(int64_t k4, const int8_t *A, int64_t lda, const int8_t *Bp,
                             const int32_t *rowsum, int64_t mr, int64_t nr, int32_t *C,
                             int64_t ldc);
void lrmpi_rowsums_vnni(int64_t m, int64_t k, const int8_t *A, int64_t lda, int32_t *rowsum);

/* AMX (igemm_amx.c): the int8 GEMM on tiles; the rest of that table is AVX-512.
 * lrmpi_amx_enable asks the OS for the tile state: 1 if granted.            */
int lrmpi_amx_enable(void);

/* The fused layers' product on AMX (igemm_amx.c; nn_body.h's nn_levels_fn) and
 * its weight layout: per plane, panels of 16 columns, each kpad/64 tiles of
 * 16 x 64 bytes in the VNNI interleave, columns padded to opad = 32 j.     */
void lrmpi_nn_amx_levels(int r, int64_t m, int64_t mpad, int64_t opad, int64_t kpad,
                         const int8_t *A, int64_t lda, int64_t pa, const int8_t *W, int64_t wq,
                         int32_t *S, int64_t lds, int64_t ls);
int64_t lrmpi_nn_amx_size(int planes, int64_t opad, int64_t kpad);
void lrmpi_nn_amx_pack(int planes, int64_t O, int64_t k, int64_t kpad, const int8_t *W,
                       int8_t *out);

#endif
