"""Kernels of the merge layers and of the graph executor's gradient sums: the elementwise
sum of two arrays, and that sum masked as ``relu_backward`` masks a gradient (the gradient of
a ReLU's output summed over its consumers, then passed back through the ReLU, in one pass).

Elementwise, in tasks of ``BLOCK`` elements: every element is computed the same way whatever
the thread count, and ``out`` may be ``a`` or ``b`` itself (never ``output``).  The sum is IEEE addition, as
NumPy's ``a + b``; the mask is ``relu_backward``'s (0 where ``output <= 0``, the sum
elsewhere; NaN outputs pass the sum) -- bit-identical to those ops run one after the other.
"""

from cython.parallel cimport prange

from cnncore._shared cimport CNN_OK, check_status, floating, py_min

cdef enum:
    BLOCK = 16384     # elements per task (64 KiB of float32)
    PIECE = 1024      # elements summed, then masked, while in L1


cdef inline void add_block(const floating* a, const floating* b, floating* out,
                           Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = a[i] + b[i]


cdef inline void add_mask_block(const floating* a, const floating* b, const floating* y,
                                floating* out, Py_ssize_t n) noexcept nogil:
    """By pieces of ``PIECE`` elements: the sums into ``out``, then the mask over them
    while they are in L1 (one loop with both: GCC does not if-convert a select after an
    addition that may trap, and leaves it scalar with a branch -- 6x slower on a random
    mask)."""
    cdef Py_ssize_t i, j = 0, m
    cdef floating v
    while j < n:
        m = py_min(PIECE, n - j)
        for i in range(j, j + m):
            out[i] = a[i] + b[i]
        for i in range(j, j + m):
            v = out[i]                             # unconditional load: branch-free select
            out[i] = 0 if y[i] <= 0 else v
        j = j + m


cdef int add_impl(const floating* a, const floating* b, const floating* y, floating* out,
                  Py_ssize_t n, int n_threads) noexcept nogil:
    """``out = a + b`` (``y`` NULL), or ``out = 0 where y <= 0 else a + b``."""
    cdef Py_ssize_t t, i0, nt = (n + BLOCK - 1) // BLOCK
    for t in prange(nt, schedule="static", num_threads=n_threads):
        i0 = t * BLOCK
        if y == NULL:
            add_block(a + i0, b + i0, out + i0, py_min(BLOCK, n - i0))
        else:
            add_mask_block(a + i0, b + i0, y + i0, out + i0, py_min(BLOCK, n - i0))
    return CNN_OK


def add(const floating[::1] a, const floating[::1] b, floating[::1] out, int n_threads):
    """``out = a + b`` elementwise (``out`` may be ``a`` or ``b``); all of one size."""
    if b.shape[0] != a.shape[0] or out.shape[0] != a.shape[0]:
        raise ValueError(
            f"add(): a, b and out must have one size. Received: sizes {a.shape[0]}, "
            f"{b.shape[0]}, {out.shape[0]}"
        )
    if a.shape[0] == 0:
        return
    cdef int status
    with nogil:
        status = add_impl(&a[0], &b[0], NULL, &out[0], a.shape[0], n_threads)
    check_status(status, "add")


def add_relu_backward(const floating[::1] a, const floating[::1] b,
                      const floating[::1] output, floating[::1] out, int n_threads):
    """``out = relu_backward(a + b, output)``: 0 where ``output <= 0``, else ``a + b``
    (``out`` may be ``a`` or ``b``); all of one size."""
    cdef Py_ssize_t n = a.shape[0]
    if b.shape[0] != n or output.shape[0] != n or out.shape[0] != n:
        raise ValueError(
            f"add_relu_backward(): a, b, output and out must have one size. Received: sizes "
            f"{n}, {b.shape[0]}, {output.shape[0]}, {out.shape[0]}"
        )
    if n == 0:
        return
    cdef int status
    with nogil:
        status = add_impl(&a[0], &b[0], &output[0], &out[0], n, n_threads)
    check_status(status, "add_relu_backward")
