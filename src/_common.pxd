# Header-only declarations shared by every kernel module (flat ``src/``: only ctypedefs, enums
# and ``cdef inline`` functions may live here -- Cython cannot cimport a flat module's cdef
# functions at run time).

ctypedef fused floating:
    float
    double

# Status codes returned by ``nogil`` kernels; the Python wrappers turn them into exceptions.
cdef enum:
    CNN_OK = 0
    CNN_ERR_NOMEM = -1       # a workspace allocation failed
    CNN_ERR_INDEX = -2       # an index (e.g. a max-pool argmax) was out of range


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Ceiling division for ``b > 0`` and any sign of ``a``."""
    if a >= 0:
        return (a + b - 1) // b
    return -((-a) // b)


cdef inline Py_ssize_t floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Floor division for ``b > 0`` and any sign of ``a`` (C ``/`` truncates toward zero)."""
    if a >= 0:
        return a // b
    return -((-a + b - 1) // b)


cdef inline Py_ssize_t py_min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t py_max(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline void valid_range(Py_ssize_t offset, Py_ssize_t step, Py_ssize_t size,
                             Py_ssize_t n_out, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Range ``[lo, hi)`` of output positions ``o`` in ``[0, n_out)`` whose input position
    ``o * step + offset`` lies inside ``[0, size)``.  ``step > 0``."""
    cdef Py_ssize_t a = ceil_div(-offset, step)           # first o with o*step + offset >= 0
    cdef Py_ssize_t b = floor_div(size - 1 - offset, step) + 1   # first o past size - 1
    a = py_min(py_max(a, 0), n_out)
    b = py_min(py_max(b, a), n_out)
    lo[0] = a
    hi[0] = b


cdef inline floating sum8(const floating* x, Py_ssize_t n) noexcept nogil:
    """``x[0] + ... + x[n-1]`` with 8 interleaved partial sums combined pairwise: a fixed
    order (it depends on ``n`` only) that the compiler keeps in vector registers."""
    cdef Py_ssize_t t = 0, q
    cdef floating a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    while t + 8 <= n:
        a0 = a0 + x[t]; a1 = a1 + x[t + 1]
        a2 = a2 + x[t + 2]; a3 = a3 + x[t + 3]
        a4 = a4 + x[t + 4]; a5 = a5 + x[t + 5]
        a6 = a6 + x[t + 6]; a7 = a7 + x[t + 7]
        t = t + 8
    for q in range(t, n):
        a0 = a0 + x[q]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
