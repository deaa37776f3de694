# Header-only BLAS access through SciPy's Cython bindings (no link-time BLAS dependency).

from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

from cnncore._shared cimport floating


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """Row-major ``C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C``.

    BLAS is column-major, so this computes ``C^T = op(B)^T op(A)^T`` with the operands swapped.
    Leading dimensions are row strides in elements.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
              &beta, c, &ldc)


cdef inline void gemv(bint trans, int m, int n, floating alpha, const floating* a,
                      int lda, const floating* x, int incx, floating beta,
                      floating* y, int incy) noexcept nogil:
    """Row-major matrix-vector product: ``A`` is ``m x n`` (rows x columns) with row stride
    ``lda``; ``y[m] = alpha * A @ x[n] + beta * y``, or with ``trans``
    ``y[n] = alpha * A.T @ x[m] + beta * y``.

    BLAS is column-major: the row-major ``A`` is the column-major ``A^T``, so the
    transposition flag is swapped (and BLAS's m and n are our n and m).
    """
    cdef char t = b'N' if trans else b'T'
    if m <= 0 or n <= 0:
        return
    if floating is float:
        sgemv(&t, &n, &m, &alpha, <float*> a, &lda, <float*> x, &incx, &beta, y, &incy)
    else:
        dgemv(&t, &n, &m, &alpha, <double*> a, &lda, <double*> x, &incx, &beta, y, &incy)
