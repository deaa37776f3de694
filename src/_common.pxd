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


cdef inline floating fixed_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    """``x[0] + ... + x[n-1]`` in a fixed order that depends on ``n`` only.  Up to 31
    elements: left to right.  Longer: 32 interleaved partial sums (lane ``q`` adds ``x[q],
    x[q+32], ...``; the compiler keeps them in vector registers), combined pairwise, then
    the tail left to right."""
    cdef floating acc[32]
    cdef floating total = 0
    cdef Py_ssize_t t = 0, q, h
    if n < 32:
        for q in range(n):
            total = total + x[q]
        return total
    for q in range(32):
        acc[q] = x[q]
    t = 32
    while t + 32 <= n:
        for q in range(32):
            acc[q] = acc[q] + x[t + q]
        t = t + 32
    h = 16
    while h >= 1:
        for q in range(h):
            acc[q] = acc[q] + acc[q + h]
        h = h // 2
    total = acc[0]
    for q in range(t, n):
        total = total + x[q]
    return total
