# Package marker for the vendored SciPy declarations (see linalg/cython_blas.pxd).
