# cdef functions of cnncore.ops._pool that other kernel modules cimport (Cython passes them
# through the module's C-API capsule): the 2x2 / stride-2 max pooling of one plane, exactly
# as max_pool2d computes it -- the vector kernels of src/_pool2x2.h at the SIMD level this
# module runs (load_kernels sets it), the exact scan for a plane holding a NaN -- and its
# ReLU-masked backward scatter-add (CNN_ERR_INDEX on an index outside the plane).  For the
# fused conv-ReLU-pool of training in cnncore.ops._conv, which so has no pooling code of its
# own.

from libc.stdint cimport int64_t


cdef void pool2x2_max_plane_float(const float* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                                 Py_ssize_t Wo, float* y, int64_t* idx) noexcept nogil
cdef void pool2x2_max_plane_double(const double* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                                  Py_ssize_t Wo, double* y, int64_t* idx) noexcept nogil
cdef int pool2x2_scatter_masked_plane_float(const float* g, const int64_t* idx,
                                            const float* mask, Py_ssize_t H, Py_ssize_t W,
                                            Py_ssize_t Ho, Py_ssize_t Wo,
                                            float* dx) noexcept nogil
cdef int pool2x2_scatter_masked_plane_double(const double* g, const int64_t* idx,
                                             const double* mask, Py_ssize_t H, Py_ssize_t W,
                                             Py_ssize_t Ho, Py_ssize_t Wo,
                                             double* dx) noexcept nogil
