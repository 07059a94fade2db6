# Extern-only declarations of ext/c/kernels.h; the contracts are written there.
from libc.stdint cimport int8_t, int32_t, int64_t, uint64_t

cdef extern from "c/kernels.h" nogil:
    enum: LRMPI_MAX_LIMBS
    ctypedef int (*lrmpi_rowmax_fn)(int64_t, int64_t, const double *, int64_t, double *) noexcept nogil
    ctypedef int (*lrmpi_colmax_fn)(int64_t, int64_t, const double *, int64_t, double *) noexcept nogil
    ctypedef void (*lrmpi_encode_t_fn)(int64_t, int64_t, const double *, int64_t,
                                       const int32_t *, int, int, int8_t *, int64_t,
                                       int64_t *, double *) noexcept nogil
    void lrmpi_bound_relu(int64_t, int64_t, const double *, const double *, const double *,
                          double *, double *) noexcept nogil
    void lrmpi_bound_maxpool(int64_t, int64_t, int64_t, int64_t, const double *, const double *,
                             const double *, const int64_t *, double *, double *,
                             double *) noexcept nogil
    ctypedef void (*lrmpi_encode_fn)(int64_t, int64_t, const double *, int64_t,
                                     const int32_t *, int, int, int8_t *, int64_t *,
                                     double *) noexcept nogil
    ctypedef void (*lrmpi_igemm_fn)(int64_t, int64_t, int64_t, const int8_t *, int64_t,
                                    const int8_t *, int64_t, int32_t *, int64_t,
                                    int) noexcept nogil
    ctypedef void (*lrmpi_acc_add_fn)(int64_t, int64_t, int64_t *, int64_t, int64_t, int,
                                      const void *, int, int64_t, int) noexcept nogil
    ctypedef void (*lrmpi_decode_fn)(int64_t, int64_t, const int64_t *, int64_t, int64_t,
                                     int, const int32_t *, const int32_t *, int, double *,
                                     int64_t, double *) noexcept nogil
    enum: LRMPI_NN_ROWS
    enum: LRMPI_NN_NHWC
    ctypedef struct lrmpi_nn_planes:
        int layout
        int64_t C, H, W, kpad, pt, pl, Hp, Wp
        int r, bits
        int8_t *D
        int64_t pstride
        int32_t *exps
        double *sq
    ctypedef struct lrmpi_nn_layer:
        int64_t n, Hp, Wp, C, kh, kw, sh, sw, dh, dw, Ho, Wo, O
        int depthwise, direct
        int64_t kpad
        int r, bits, nlimbs
        const int8_t *D
        int64_t dstride
        const int32_t *e
        const int8_t *wpack
        int64_t wplanes
        const int32_t *f
        const double *bias
        int act
        const double *slope
        double lo, hi
        const double *Res
        double *Cout
        double *Zout
        double *Yout
        double *Aout
        int pool
        int64_t pkh, pkw, psh, psw, pdh, pdw, ppt, ppl, pHo, pWo
        double *Pout
        const lrmpi_nn_planes *next
        int64_t unit_rows
        double *sq
        double *times
        int est_p
        const int8_t *Du
        const int8_t *wres
        int64_t ustride
        const int32_t *eu
        const int32_t *ef
        double *Eout
    ctypedef int (*lrmpi_nn_quantize_fn)(int64_t, const void *, int, const lrmpi_nn_planes *) noexcept nogil
    ctypedef int64_t (*lrmpi_nn_packed_size_fn)(int, int64_t, int64_t, int) noexcept nogil
    ctypedef void (*lrmpi_nn_pack_fn)(int, int64_t, int64_t, int64_t, int, int64_t, const int8_t *,
                                      int8_t *) noexcept nogil
    ctypedef int (*lrmpi_nn_layer_fn)(const lrmpi_nn_layer *) noexcept nogil
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
        lrmpi_nn_quantize_fn nn_quantize
        lrmpi_nn_packed_size_fn nn_packed_size
        lrmpi_nn_pack_fn nn_pack
        lrmpi_nn_layer_fn nn_layer
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
    void lrmpi_bound_inputs(int64_t, int64_t, const double *, const double *, const int32_t *,
                            int, int, int, double *, double *, double *) noexcept nogil
    void lrmpi_residual_sumsq(int64_t, int64_t, const double *, const int32_t *, int, int,
                              double *) noexcept nogil
    void lrmpi_bound_relu_inputs(int64_t, int64_t, const double *, const double *,
                                 const double *, const int32_t *, int, int, int, double *,
                                 double *, double *) noexcept nogil
    int lrmpi_weight_rows(int64_t, int64_t, const double *, double *, double *, double *,
                          double *) noexcept nogil
    const lrmpi_kernel_table *lrmpi_kernels()
    const lrmpi_kernel_table *lrmpi_kernels_for(const char *isa)
    const char *lrmpi_kernel_isas()
    int lrmpi_set_isa(const char *isa)
