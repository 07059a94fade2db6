# Extern-only declarations of ext/c/kernels.h; the contracts are written there.
from libc.stdint cimport int8_t, int32_t, int64_t, uint64_t

cdef extern from "c/kernels.h" nogil:
    enum: LRMPI_MAX_LIMBS
    ctypedef int (*lrmpi_rowmax_fn)(int64_t, int64_t, const double *, int64_t, double *) noexcept nogil
    ctypedef int (*lrmpi_colmax_fn)(int64_t, int64_t, const double *, int64_t, double *) noexcept nogil
    ctypedef void (*lrmpi_encode_t_fn)(int64_t, int64_t, const double *, int64_t,
                                       const int32_t *, int, int, int8_t *, int64_t *,
                                       double *) noexcept nogil
    ctypedef void (*lrmpi_encode_fn)(int64_t, int64_t, const double *, int64_t,
                                     const int32_t *, int, int, int8_t *, int64_t *,
                                     double *) noexcept nogil
    ctypedef void (*lrmpi_igemm_fn)(int64_t, int64_t, int64_t, const int8_t *, int64_t,
                                    const int8_t *, int64_t, int32_t *, int64_t) noexcept nogil
    ctypedef void (*lrmpi_acc_add_fn)(int64_t, int64_t, int64_t *, int64_t, int64_t, int,
                                      const void *, int, int64_t, int) noexcept nogil
    ctypedef void (*lrmpi_decode_fn)(int64_t, int64_t, const int64_t *, int64_t, int64_t,
                                     int, const int32_t *, const int32_t *, int, double *,
                                     int64_t, double *) noexcept nogil
    ctypedef void (*lrmpi_crt_residues_fn)(int64_t, int64_t, const double *, int64_t, int64_t,
                                           int64_t, const int32_t *, int, const int32_t *,
                                           int8_t *, int64_t *) noexcept nogil
    ctypedef void (*lrmpi_crt_reconstruct_fn)(int64_t, int64_t, int, const int32_t *,
                                              const int32_t *, int64_t, const uint64_t *,
                                              const uint64_t *, const int32_t *, const int32_t *,
                                              double *, int64_t, double *) noexcept nogil
    ctypedef void (*lrmpi_acc_update_fn)(int64_t, int64_t, double *, int32_t *, int64_t,
                                         const void *, int, int64_t, int, const int32_t *,
                                         const int32_t *, int, double *, int64_t,
                                         double *) noexcept nogil
    ctypedef struct lrmpi_kernel_table:
        const char *isa
        lrmpi_rowmax_fn rowmax
        lrmpi_colmax_fn colmax
        lrmpi_encode_fn encode
        lrmpi_encode_t_fn encode_t
        lrmpi_igemm_fn igemm
        lrmpi_acc_add_fn acc_add
        lrmpi_decode_fn decode
        lrmpi_crt_residues_fn crt_residues
        lrmpi_crt_reconstruct_fn crt_reconstruct
        lrmpi_acc_update_fn acc_update

    void lrmpi_dot2_ref(int64_t, int64_t, const double *, int64_t, const double *, int64_t,
                        const int64_t *, const int64_t *, const int32_t *, const int32_t *,
                        double *, double *)
    void lrmpi_crt_residues(int64_t, int64_t, const double *, int64_t, int64_t, int64_t,
                            const int32_t *, int, const int32_t *, int8_t *, int64_t *)
    void lrmpi_crt_reconstruct(int64_t, int64_t, int, const int32_t *, const int32_t *,
                               int64_t, const uint64_t *, const uint64_t *, const int32_t *,
                               const int32_t *, double *, int64_t, double *)
    const lrmpi_kernel_table *lrmpi_kernels()
    const lrmpi_kernel_table *lrmpi_kernels_for(const char *isa)
    const char *lrmpi_kernel_isas()
    int lrmpi_set_isa(const char *isa)
