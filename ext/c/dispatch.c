/* The registration table: (op, isa) -> function pointer, chosen from CPUID.
 * Python (lrmpi/numerics/kernels.py) applies the LRMPI_KERNEL override through
 * lrmpi_set_isa(); like BLIS_ARCH_TYPE it can only pick an ISA the CPU has. */
#include <string.h>
#include "kernels.h"
#include "gemm_internal.h"

/* the fused inference layers of an ISA (nn_ref.c, nn_x86.c) */
#define NN(isa) lrmpi_nn_quantize_##isa, lrmpi_nn_packed_size_##isa, lrmpi_nn_pack_##isa, \
                lrmpi_nn_layer_##isa

static const lrmpi_kernel_table TABLES[] = {
    {"ref", lrmpi_rowmax_ref, lrmpi_colmax_ref, lrmpi_encode_ref, lrmpi_encode_t_ref,
     lrmpi_igemm_ref,
     lrmpi_acc_add_ref, lrmpi_decode_ref, NN(ref),
     lrmpi_crt_residues, lrmpi_crt_reconstruct, lrmpi_acc_update_ref},
#if defined(__x86_64__) || defined(__i386__)
    {"avx2", lrmpi_rowmax_ref, lrmpi_colmax_avx2, lrmpi_encode_ref, lrmpi_encode_t_avx2,
     lrmpi_igemm_avx2,
     lrmpi_acc_add_ref, lrmpi_decode_ref, NN(avx2),
     lrmpi_crt_residues, lrmpi_crt_reconstruct, lrmpi_acc_update_ref},
    {"avx512", lrmpi_rowmax_avx512, lrmpi_colmax_avx512, lrmpi_encode_avx512,
     lrmpi_encode_t_avx512, lrmpi_igemm_avx512,
     lrmpi_acc_add_avx512, lrmpi_decode_avx512, NN(avx512),
     lrmpi_crt_residues_avx512, lrmpi_crt_reconstruct_avx512, lrmpi_acc_update_avx512},
    /* AVX-512 everywhere, and the int8 GEMM on AMX tiles (igemm_amx.c) */
    {"amx", lrmpi_rowmax_avx512, lrmpi_colmax_avx512, lrmpi_encode_avx512,
     lrmpi_encode_t_avx512, lrmpi_igemm_amx,
     lrmpi_acc_add_avx512, lrmpi_decode_avx512, NN(amx),
     lrmpi_crt_residues_avx512, lrmpi_crt_reconstruct_avx512, lrmpi_acc_update_avx512},
#endif
};
#define NTABLES ((int)(sizeof(TABLES) / sizeof(TABLES[0])))

static int supported(const char *isa)
{
    if (strcmp(isa, "ref") == 0)
        return 1;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (strcmp(isa, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const int avx512 = __builtin_cpu_supports("avx512f") &&
                       __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512cd") &&
                       __builtin_cpu_supports("avx512dq") &&
                       __builtin_cpu_supports("avx512vl") &&
                       __builtin_cpu_supports("avx512vnni");
    if (strcmp(isa, "avx512") == 0)
        return avx512;
#if defined(__x86_64__)
    /* CPUID says what the core has; the OS must also grant the tile state */
    if (strcmp(isa, "amx") == 0) {
        static int granted = -1;
        if (granted < 0)
            granted = avx512 && __builtin_cpu_supports("amx-tile") &&
                      __builtin_cpu_supports("amx-int8") && lrmpi_amx_enable();
        return granted;
    }
#endif
#endif
    return 0;
}

const lrmpi_kernel_table *lrmpi_kernels_for(const char *isa)
{
    for (int t = 0; t < NTABLES; t++)
        if (strcmp(TABLES[t].isa, isa) == 0)
            return supported(isa) ? &TABLES[t] : NULL;
    return NULL;
}

const char *lrmpi_kernel_isas(void)
{
    static char buf[128];
    buf[0] = 0;
    for (int t = 0; t < NTABLES; t++)
        if (supported(TABLES[t].isa)) {
            if (buf[0])
                strcat(buf, ",");
            strcat(buf, TABLES[t].isa);
        }
    return buf;
}

static const lrmpi_kernel_table *current = NULL;

const lrmpi_kernel_table *lrmpi_kernels(void)
{
    if (!current) /* the best supported table: they are listed best last */
        for (int t = 0; t < NTABLES; t++)
            if (supported(TABLES[t].isa))
                current = &TABLES[t];
    return current;
}

int lrmpi_set_isa(const char *isa)
{
    const lrmpi_kernel_table *t = lrmpi_kernels_for(isa);
    if (!t)
        return -1;
    current = t;
    return 0;
}
