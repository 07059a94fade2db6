/* Internals shared by the GEMM kernels (igemm_x86.c, igemm_amx.c) and the
 * dispatcher; not part of the kernel contracts in kernels.h. */
#ifndef LRMPI_GEMM_INTERNAL_H
#define LRMPI_GEMM_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

/* Per-thread scratch of the GEMMs (igemm_x86.c): grows *buf to `need` bytes
 * (kept across calls, 2 MB aligned); 0, or -1 without memory.              */
int lrmpi_scratch(int8_t **buf, size_t *cap, size_t need);

/* B's packer for both GEMMs (igemm_x86.c, AVX-512): columns [0, nr) x k       */
/* [0, kc) of Bt -> Bp[q][NR][4] (4 bytes of k per column, NR a multiple of 16) */
/* for q < qpad, every byte XORed with `flip` (0x80808080: the unsigned operand */
/* of vpdpbusd; 0 for AMX); past kc and nr it packs zeros (XORed too: they meet */
/* zeros of A). Gather offsets are 32-bit: 16 * ldb < 2^31.                     */
void lrmpi_pack_b_gather(int NR, int64_t nr, int64_t kc, int64_t qpad, const int8_t *Bt,
                         int64_t ldb, int8_t *Bp, uint32_t flip);

/* AMX (igemm_amx.c): the int8 GEMM on tiles; the rest of that table is AVX-512.
 * lrmpi_amx_enable asks the OS for the tile state: 1 if granted.            */
int lrmpi_amx_enable(void);

#endif
