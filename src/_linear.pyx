"""Fully connected layer kernels: ``y = x @ W.T + b`` and its gradients, as single-threaded
BLAS GEMMs on fixed blocks of rows run in parallel by OpenMP.

Going through these (rather than NumPy's ``@``) keeps a training step on one threading
runtime: NumPy's BLAS threads keep spinning after each call and would fight the OpenMP
kernels for the cores.  Blocks have a fixed size (shapes only, never the thread count), so
results are bit-identical for any number of threads.
"""

from cython.parallel cimport prange
from libc.string cimport memset

from _blas cimport gemm
from _common cimport floating, py_min

cdef enum:
    ROW_BLOCK = 32     # rows of x / grad_output per task
    COL_BLOCK = 64     # output features per weight-gradient task


cdef void blocked_gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       const floating* a, Py_ssize_t a_step, Py_ssize_t lda, const floating* b,
                       Py_ssize_t ldb, const floating* bias, floating* c, Py_ssize_t block,
                       int n_threads) noexcept nogil:
    """``C (M x N, row stride N) = op(A) @ op(B) [+ bias on every row]``, one GEMM per fixed
    block of ``block`` rows of C, the blocks spread over the threads; row ``m`` of op(A)
    starts at ``a + m * a_step``.  ``K == 0``: C is the bias, or zero (A and B are not
    read and may be NULL)."""
    cdef Py_ssize_t n_blocks = (M + block - 1) // block
    cdef Py_ssize_t blk, m0, m1, r, j
    for blk in prange(n_blocks, schedule="static",
                     num_threads=<int> py_min(n_threads, n_blocks)):
        m0 = blk * block
        m1 = py_min(M, m0 + block)
        if bias != NULL:
            for r in range(m0, m1):
                for j in range(N):
                    c[r * N + j] = bias[j]
        elif K == 0:
            memset(c + m0 * N, 0, (m1 - m0) * N * sizeof(floating))
        if K > 0:
            gemm(trans_a, trans_b, <int> (m1 - m0), <int> N, <int> K, <floating> 1.0,
                 a + m0 * a_step, <int> lda, b, <int> ldb,
                 <floating> (1.0 if bias != NULL else 0.0), c + m0 * N, <int> N)


cdef inline const floating* data(const floating[:, ::1] a):
    """Address of the first element, or NULL for an empty array (which has none)."""
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] weight,
                   const floating[::1] bias, floating[:, ::1] y_out, int n_threads):
    """``y_out[n, o] = sum_i x[n, i] * weight[o, i] + bias[o]`` (bias may be None)."""
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = weight.shape[0]
    cdef const floating* bptr
    cdef const floating* xp
    cdef const floating* wp
    if N == 0 or O == 0:  # (before taking element addresses: there may be none)
        return
    bptr = &bias[0] if bias is not None else NULL
    xp, wp = data(x), data(weight)
    with nogil:
        blocked_gemm(False, True, N, O, I, xp, I, I, wp, I, bptr, &y_out[0, 0], ROW_BLOCK,
                     n_threads)


def linear_backward_input(const floating[:, ::1] grad_output, const floating[:, ::1] weight,
                          floating[:, ::1] dx_out, int n_threads):
    """``dx_out = grad_output @ weight``."""
    cdef Py_ssize_t N = grad_output.shape[0], O = grad_output.shape[1], I = weight.shape[1]
    cdef const floating* gp
    cdef const floating* wp
    if N == 0 or I == 0:
        return
    gp, wp = data(grad_output), data(weight)
    with nogil:
        blocked_gemm(False, False, N, I, O, gp, O, O, wp, I, <const floating*> NULL,
                     &dx_out[0, 0], ROW_BLOCK, n_threads)


def linear_backward_weight(const floating[:, ::1] grad_output, const floating[:, ::1] x,
                           floating[:, ::1] dw_out, int n_threads):
    """``dw_out = grad_output.T @ x``: blocks of output features, each one GEMM over the
    whole batch (a fixed summation order)."""
    cdef Py_ssize_t N = grad_output.shape[0], O = grad_output.shape[1], I = x.shape[1]
    cdef const floating* gp
    cdef const floating* xp
    if O == 0 or I == 0:
        return
    gp, xp = data(grad_output), data(x)
    with nogil:
        blocked_gemm(True, False, O, I, N, gp, 1, O, xp, I, <const floating*> NULL,
                     &dw_out[0, 0], COL_BLOCK, n_threads)
