# Declarations of src/_pool2x2.h (2x2 / stride-2 max pooling of one plane, vector code with
# one clone per SIMD level), for cnncore.ops._pool -- the one module that compiles it; other
# modules call its kernels through cnncore/ops/_pool.pxd.

from libc.stdint cimport int64_t


cdef extern from "_pool2x2.h" nogil:
    # 1 means "compute this plane with the generic kernel" (it held a NaN, or, backward, an
    # index outside its window); nothing written then counts.
    int cnn_p2_fwd_plane_float(const float* x, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                               float* y, int64_t* idx)
    int cnn_p2_fwd_plane_double(const double* x, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                                double* y, int64_t* idx)
    int cnn_p2_bwd_plane_float(const float* g, const int64_t* idx, const float* mask,
                               Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                               float* dx)
    int cnn_p2_bwd_plane_double(const double* g, const int64_t* idx, const double* mask,
                                Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                                double* dx)
    # which clone runs (0 baseline, 1 AVX2+FMA, 2 AVX-512), capped to the build and the CPU;
    # returns the level set
    int cnn_p2_set_level(int)
