"""Activation kernels: elementwise relu / leaky_relu / sigmoid / tanh / gelu / silu / elu /
hardswish / hardsigmoid / softplus / mish / relu6 with their backward passes, softmax /
log_softmax (forward and backward) over one axis, and the per-channel scaling of dropout2d.

Elementwise kernels see the arrays as flat contiguous vectors and parallelize over fixed-size
blocks of ``BLOCK`` elements (each output element is written once, in one pass).  Softmax
kernels see ``(outer, D, inner)`` arrays (reduction over the middle axis): rows (``inner ==
1``) are one task each; otherwise a task is a block of ``COLS`` adjacent columns of one outer
index, swept row by row so every access is contiguous.  The work split depends only on the
shapes, and each reduction runs in a fixed order inside one task, so results are
bit-identical for any thread count.

Every output may alias its input (``out=x`` in the Python API): each kernel reads an element
before it writes the same element, and never reads an element after writing it except
through the output itself.
"""

from cython.parallel cimport prange

from cnncore._shared cimport (OP_ELU, OP_ELU_BW, OP_GELU, OP_GELU_BW, OP_GELU_TANH,
                              OP_GELU_TANH_BW, OP_HARDSIGMOID, OP_HARDSIGMOID_BW,
                              OP_HARDSWISH, OP_HARDSWISH_BW, OP_LEAKY_RELU, OP_LEAKY_RELU_BW,
                              OP_MISH, OP_MISH_BW, OP_RELU, OP_RELU6, OP_RELU6_BW, OP_RELU_BW,
                              OP_SIGMOID, OP_SIGMOID_BW, OP_SILU, OP_SILU_BW, OP_SOFTPLUS,
                              OP_SOFTPLUS_BW, OP_TANH, OP_TANH_BW, floating, py_max, py_min)
from _vmath cimport (CNN_ACT_ELU, CNN_ACT_GELU, CNN_ACT_GELU_TANH, CNN_ACT_HARDSIGMOID,
                    CNN_ACT_HARDSWISH, CNN_ACT_MISH, CNN_ACT_RELU6, CNN_ACT_SILU, CNN_ACT_SOFTPLUS,
                    act_backward, act_forward, col_acc, col_exp_acc,
                    col_log_softmax_back, col_max, col_mul, col_softmax_back, col_sub2, flog,
                    log_softmax_back_row, row_dot, row_exp_sum, row_max, row_scale, row_sub2,
                    row_sum, sigmoid_block, softmax_back_row, tanh_block)

cdef extern from *:
    """
    /* Prefetch hints for the softmax rows (results unchanged): the lines of
       [p, p + bytes), for reading, or for writing (owned before the store) */
    static inline void cnn_sm_prefetch(const void* p, ptrdiff_t bytes) {
    #if defined(__GNUC__)
        for (ptrdiff_t q = 0; q < bytes; q += 64) __builtin_prefetch((const char*) p + q, 0, 3);
    #else
        (void) p; (void) bytes;
    #endif
    }
    static inline void cnn_sm_prefetch_w(void* p, ptrdiff_t bytes) {
    #if defined(__GNUC__)
        for (ptrdiff_t q = 0; q < bytes; q += 64) __builtin_prefetch((char*) p + q, 1, 3);
    #else
        (void) p; (void) bytes;
    #endif
    }
    """
    void cnn_sm_prefetch(const void* p, Py_ssize_t nbytes) noexcept nogil
    void cnn_sm_prefetch_w(void* p, Py_ssize_t nbytes) noexcept nogil

cdef enum:
    # (log_)softmax forward over rows up to this many bytes: the next row is prefetched while
    # one is computed, and the output row owned before it is written (the first pass of
    # each row waited on memory, the stores on read-for-ownership); 6-10 % less time
    SM_PREFETCH_ROW = 16384
    # Elements per parallel task of the elementwise kernels (128 KiB of float32).
    BLOCK = 32768
    # Columns per task of the strided (inner > 1) softmax kernels.
    COLS = 256


# ------------------------------------------------------------------------------------------
# Elementwise
# ------------------------------------------------------------------------------------------

cdef inline int vmath_kind(int op) noexcept nogil:
    """The CNN_ACT_* kind of a forward or backward op computed by _vmath's block loops, or 0."""
    if op == OP_GELU or op == OP_GELU_BW:
        return CNN_ACT_GELU
    if op == OP_GELU_TANH or op == OP_GELU_TANH_BW:
        return CNN_ACT_GELU_TANH
    if op == OP_SILU or op == OP_SILU_BW:
        return CNN_ACT_SILU
    if op == OP_ELU or op == OP_ELU_BW:
        return CNN_ACT_ELU
    if op == OP_SOFTPLUS or op == OP_SOFTPLUS_BW:
        return CNN_ACT_SOFTPLUS
    if op == OP_MISH or op == OP_MISH_BW:
        return CNN_ACT_MISH
    if op == OP_HARDSWISH or op == OP_HARDSWISH_BW:
        return CNN_ACT_HARDSWISH
    if op == OP_HARDSIGMOID or op == OP_HARDSIGMOID_BW:
        return CNN_ACT_HARDSIGMOID
    if op == OP_RELU6 or op == OP_RELU6_BW:
        return CNN_ACT_RELU6
    return 0


cdef void unary_block(int op, const floating* x, floating* y, Py_ssize_t n,
                      floating slope, floating p2) noexcept nogil:
    """``y = op(x)``; ``slope`` / ``p2``: negative_slope, alpha, or beta and threshold."""
    cdef Py_ssize_t i
    cdef floating v, w
    cdef int kind = vmath_kind(op)
    if kind:
        act_forward(kind, x, y, n, slope, p2)
        return
    if op == OP_RELU:
        for i in range(n):
            v = x[i]
            y[i] = 0 if v < 0 else v               # NaN and -0.0 pass through, as torch
    elif op == OP_LEAKY_RELU:
        for i in range(n):
            v = x[i]
            w = v * slope                          # unconditional: branch-free select
            y[i] = v if v > 0 else w
    elif op == OP_SIGMOID:
        sigmoid_block(x, y, n)
    elif op == OP_TANH:
        tanh_block(x, y, n)


cdef void binary_block(int op, const floating* g, const floating* a, floating* y, Py_ssize_t n,
                       floating slope, floating p2) noexcept nogil:
    """``y = op(grad_output g, saved tensor a)``; ``y`` may alias ``g`` or ``a``."""
    cdef Py_ssize_t i
    cdef floating s, v
    cdef int kind = vmath_kind(op)
    if kind:
        act_backward(kind, g, a, y, n, slope, p2)
        return
    if op == OP_RELU_BW:                           # a = relu input or output (same sign test)
        for i in range(n):
            v = g[i]                               # unconditional load: branch-free select
            y[i] = 0 if a[i] <= 0 else v
    elif op == OP_LEAKY_RELU_BW:                   # a = input
        for i in range(n):
            v = g[i]
            s = v * slope
            y[i] = v if a[i] > 0 else s
    elif op == OP_SIGMOID_BW:                      # a = output s: g * (1 - s) * s
        for i in range(n):
            s = a[i]
            y[i] = g[i] * (1 - s) * s
    elif op == OP_TANH_BW:                         # a = output t: g * (1 - t^2)
        for i in range(n):
            s = a[i]
            y[i] = g[i] * (1 - s * s)


cdef inline void elementwise_block(int op, const floating* g, const floating* a, floating* y,
                                   Py_ssize_t n, floating slope, floating p2) noexcept nogil:
    """One block of op: ``y = op(a)`` for a forward op (``g`` NULL), ``y = op(g, a)`` for a
    backward op (the op is tested once per block, outside the loops)."""
    if g != NULL:
        binary_block(op, g, a, y, n, slope, p2)
    else:
        unary_block(op, a, y, n, slope, p2)


cdef void elementwise_impl(int op, const floating* g, const floating* a, floating* y,
                           Py_ssize_t n, floating slope, floating p2,
                           int n_threads) noexcept nogil:
    """:func:`elementwise_block` over fixed blocks of ``BLOCK`` elements, spread over the
    threads (one block, no parallel region, with one thread or a small ``n``)."""
    cdef Py_ssize_t n_blocks = (n + BLOCK - 1) // BLOCK
    cdef Py_ssize_t b, lo
    cdef int nt = <int> py_min(n_threads, n_blocks)
    if nt <= 1:
        elementwise_block(op, g, a, y, n, slope, p2)
        return
    for b in prange(n_blocks, schedule="static", num_threads=nt):
        lo = b * BLOCK
        elementwise_block(op, g + lo if g != NULL else NULL, a + lo, y + lo,
                          py_min(BLOCK, n - lo), slope, p2)


# ------------------------------------------------------------------------------------------
# Softmax / log_softmax over the middle axis of (outer, D, inner)
# ------------------------------------------------------------------------------------------

cdef void softmax_row(const floating* x, floating* y, Py_ssize_t D, bint take_log) noexcept nogil:
    cdef floating m = row_max(x, D)
    if take_log:                                   # (x - m) - log(sum(exp(x - m)))
        row_sub2(x, m, flog(row_exp_sum(x, m, <floating*> NULL, D)), y, D)
    else:                                          # exp(x - m) / sum(exp(x - m))
        row_scale(y, 1 / row_exp_sum(x, m, y, D), y, D)


cdef void softmax_backward_row(const floating* g, const floating* y, floating* out, Py_ssize_t D,
                               bint take_log) noexcept nogil:
    if take_log:                                   # g - exp(y) * sum(g)
        log_softmax_back_row(g, y, row_sum(g, D), out, D)
    else:                                          # y * (g - sum(g * y))
        softmax_back_row(g, y, row_dot(g, y, D), out, D)


cdef void softmax_cols(const floating* x, floating* y, Py_ssize_t D, Py_ssize_t inner,
                       Py_ssize_t nc, bint take_log) noexcept nogil:
    """Columns ``[0, nc)`` (nc <= COLS) of one (D, inner) slab; element (c, j) at
    ``c * inner + j``."""
    cdef floating m[COLS]
    cdef floating s[COLS]
    cdef Py_ssize_t c, j
    for j in range(nc):
        m[j] = x[j]
        s[j] = 0
    for c in range(1, D):
        col_max(x + c * inner, m, nc)
    if take_log:                                   # (x - m) - log(sum(exp(x - m)))
        for c in range(D):
            col_exp_acc(x + c * inner, m, <floating*> NULL, s, nc)
        for j in range(nc):
            s[j] = flog(s[j])
        for c in range(D):
            col_sub2(x + c * inner, m, s, y + c * inner, nc)
    else:                                          # exp(x - m) / sum(exp(x - m))
        for c in range(D):
            col_exp_acc(x + c * inner, m, y + c * inner, s, nc)
        for j in range(nc):
            s[j] = 1 / s[j]
        for c in range(D):
            col_mul(y + c * inner, s, y + c * inner, nc)


cdef void softmax_backward_cols(const floating* g, const floating* y, floating* out,
                                Py_ssize_t D, Py_ssize_t inner, Py_ssize_t nc,
                                bint take_log) noexcept nogil:
    cdef floating s[COLS]
    cdef Py_ssize_t c, j
    for j in range(nc):
        s[j] = 0
    for c in range(D):                             # sum(g) or sum(g * y) per column
        if take_log:
            col_acc(g + c * inner, <const floating*> NULL, s, nc)
        else:
            col_acc(g + c * inner, y + c * inner, s, nc)
    for c in range(D):
        if take_log:
            col_log_softmax_back(g + c * inner, y + c * inner, s, out + c * inner, nc)
        else:
            col_softmax_back(g + c * inner, y + c * inner, s, out + c * inner, nc)


cdef void softmax_impl(const floating* g, const floating* x, floating* y, Py_ssize_t outer,
                       Py_ssize_t D, Py_ssize_t inner, bint take_log,
                       int n_threads) noexcept nogil:
    """Forward (``g`` NULL: ``y = (log_)softmax(x)``) or backward (``y`` = the gradient from
    ``grad_output g`` and the forward output ``x``) over the middle axis of (outer, D,
    inner): one task per row (``inner == 1``) or per block of ``COLS`` columns of one outer
    index; the direction is tested once per task."""
    cdef Py_ssize_t t, o, cb, j0, off
    cdef Py_ssize_t n_cb = (inner + COLS - 1) // COLS
    cdef Py_ssize_t slab = D * inner
    cdef Py_ssize_t rbytes = D * sizeof(floating)
    if inner == 1:
        for t in prange(outer, schedule="static", num_threads=n_threads):
            if g == NULL and rbytes <= SM_PREFETCH_ROW:   # (forward only: in the backward
                if t + 1 < outer:                         # it measured neutral to worse)
                    cnn_sm_prefetch(x + (t + 1) * D, rbytes)
                cnn_sm_prefetch_w(y + t * D, rbytes)
            if g == NULL:
                softmax_row(x + t * D, y + t * D, D, take_log)
            else:
                softmax_backward_row(g + t * D, x + t * D, y + t * D, D, take_log)
        return
    for t in prange(outer * n_cb, schedule="static", num_threads=n_threads):
        o = t // n_cb
        cb = t % n_cb
        j0 = cb * COLS
        off = o * slab + j0
        if g == NULL:
            softmax_cols(x + off, y + off, D, inner, py_min(COLS, inner - j0), take_log)
        else:
            softmax_backward_cols(g + off, x + off, y + off, D, inner,
                                  py_min(COLS, inner - j0), take_log)


# ------------------------------------------------------------------------------------------
# Thin def wrappers (validated by cnncore.functional; empty arrays never get here)
# ------------------------------------------------------------------------------------------

def unary(int op, const floating[::1] x, floating[::1] y_out, double slope, int n_threads,
          double p2=0.0):
    """``y_out = op(x)`` elementwise; ``y_out`` may be ``x``.  ``slope``: negative_slope,
    alpha or beta; ``p2``: softplus's threshold."""
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        elementwise_impl(op, <const floating*> NULL, &x[0], &y_out[0], n, <floating> slope,
                         <floating> p2, n_threads)


def binary(int op, const floating[::1] grad_output, const floating[::1] saved,
           floating[::1] grad_out, double slope, int n_threads, double p2=0.0):
    """``grad_out = op(grad_output, saved)`` elementwise; may alias either input."""
    cdef Py_ssize_t n = grad_output.shape[0]
    if n == 0:
        return
    with nogil:
        elementwise_impl(op, &grad_output[0], &saved[0], &grad_out[0], n, <floating> slope,
                         <floating> p2, n_threads)


def channel_scale(const floating[:, ::1] x, const floating[::1] scale, floating[:, ::1] y_out,
                  int n_threads):
    """``y_out[p, :] = x[p, :] * scale[p]`` for every plane ``p`` (dropout2d and its
    gradient); ``y_out`` may be ``x``.  Fixed blocks of ``BLOCK`` elements, as the
    elementwise kernels."""
    cdef Py_ssize_t P = x.shape[0], S = x.shape[1]
    cdef Py_ssize_t n = P * S
    cdef Py_ssize_t n_blocks, b, lo, hi, p, i, j0, j1
    cdef int nt
    cdef floating s
    if n == 0:
        return
    n_blocks = (n + BLOCK - 1) // BLOCK
    nt = <int> py_min(n_threads, n_blocks)
    cdef const floating* xp = &x[0, 0]
    cdef floating* yp = &y_out[0, 0]
    cdef const floating* sp = &scale[0]
    with nogil:
        for b in prange(n_blocks, schedule="static", num_threads=py_max(nt, 1)):
            lo = b * BLOCK
            hi = py_min(lo + BLOCK, n)
            p = lo // S
            while p * S < hi:                      # the planes that meet [lo, hi)
                s = sp[p]
                j0 = py_max(p * S, lo)
                j1 = py_min((p + 1) * S, hi)
                for i in range(j0, j1):
                    yp[i] = xp[i] * s
                p = p + 1


def softmax(const floating[:, :, ::1] x, floating[:, :, ::1] y_out, bint take_log,
            int n_threads):
    """(log_)softmax over axis 1 of an (outer, D, inner) array into ``y_out``."""
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        return
    with nogil:
        softmax_impl(<const floating*> NULL, &x[0, 0, 0], &y_out[0, 0, 0], x.shape[0],
                     x.shape[1], x.shape[2], take_log, n_threads)


def softmax_backward(const floating[:, :, ::1] grad_output, const floating[:, :, ::1] output,
                     floating[:, :, ::1] grad_out, bint take_log, int n_threads):
    """Gradient of (log_)softmax over axis 1 from its output, into ``grad_out``."""
    if output.shape[0] == 0 or output.shape[1] == 0 or output.shape[2] == 0:
        return
    with nogil:
        softmax_impl(&grad_output[0, 0, 0], &output[0, 0, 0], &grad_out[0, 0, 0],
                     output.shape[0], output.shape[1], output.shape[2], take_log, n_threads)
