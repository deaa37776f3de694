# The type names and the four BLAS declarations of SciPy's scipy/linalg/cython_blas.pxd (BSD-3-Clause, the SciPy
# developers) that src/_blas.pxd cimports, copied verbatim so that building cnncore does not
# need SciPy installed (pip's isolated build environment skips a 35 MB wheel).  The compiled
# extensions are the same: the cimport is resolved at import time by fetching the function
# pointers from the installed scipy.linalg.cython_blas, whose signatures Cython checks
# (a mismatch is an ImportError naming the function, never a wrong call).
# Keep these lines identical to SciPy's.

ctypedef float s
ctypedef double d
ctypedef float complex c
ctypedef double complex z

cdef void dgemm(char *transa, char *transb, int *m, int *n, int *k, d *alpha, d *a, int *lda, d *b, int *ldb, d *beta, d *c, int *ldc) noexcept nogil
cdef void dgemv(char *trans, int *m, int *n, d *alpha, d *a, int *lda, d *x, int *incx, d *beta, d *y, int *incy) noexcept nogil
cdef void sgemm(char *transa, char *transb, int *m, int *n, int *k, s *alpha, s *a, int *lda, s *b, int *ldb, s *beta, s *c, int *ldc) noexcept nogil
cdef void sgemv(char *trans, int *m, int *n, s *alpha, s *a, int *lda, s *x, int *incx, s *beta, s *y, int *incy) noexcept nogil
