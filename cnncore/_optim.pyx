"""Fused optimizer updates: one pass over each parameter instead of a dozen NumPy ufunc
passes.  Every element goes through exactly the operations of the NumPy reference in
cnncore/optim.py (and of PyTorch's single-tensor code), in the same order and precision --
scalars are rounded to the parameter's dtype first, and the module is compiled with
``-ffp-contract=off`` so no multiply-add is fused -- so results are bit-identical to it.
Elementwise, hence deterministic for any thread count.
"""

from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

cimport numpy as cnp

from cnncore._shared cimport floating

cnp.import_array()


cdef extern from "<math.h>" nogil:
    float sqrtf(float)
    double sqrt(double)


cdef inline floating sqrt_(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating nan_max(floating a, floating b) noexcept nogil:
    """``np.maximum``: NaN if either is NaN."""
    return a if (a > b or a != a) else b


cdef enum:
    SPAN = 4096     # elements per task of the SGD kernels (whole cache lines, in L1)


cdef inline void sgd_span(floating* data, const floating* grad, floating* buf,
                          Py_ssize_t n, floating wd, floating m, floating damp,
                          floating neg_lr, bint use_wd, bint use_m, bint use_damp,
                          bint nesterov, bint first_step) noexcept nogil:
    """SGD on ``n`` elements: the operations of PyTorch's single-tensor SGD, element by
    element (``buf`` unused without momentum)."""
    cdef Py_ssize_t i
    cdef floating g, b
    if use_m and not first_step and not use_damp and not nesterov:
        # the common step (momentum, no dampening, not the first step), its flags out of the
        # loop so that it vectorizes -- the general loop below, with its per-element
        # branches, stays scalar (LeNet-5's 61.7k parameters: ~1.4 ns per element); the
        # same operations in the same order, so the same bits
        if use_wd:
            for i in range(n):
                g = grad[i] + data[i] * wd
                b = buf[i] * m + g
                buf[i] = b
                data[i] = data[i] + b * neg_lr
        else:
            for i in range(n):
                b = buf[i] * m + grad[i]
                buf[i] = b
                data[i] = data[i] + b * neg_lr
        return
    for i in range(n):
        g = grad[i]
        if use_wd:
            g = g + data[i] * wd
        if use_m:
            if first_step:
                b = g
            else:
                b = buf[i] * m
                if use_damp:
                    b = b + g * damp
                else:
                    b = b + g
            buf[i] = b
            if nesterov:
                g = g + b * m
            else:
                g = b
        data[i] = data[i] + g * neg_lr


def sgd_update(floating[::1] data, const floating[::1] grad, floating[::1] buf,
               double lr, double momentum, double dampening, double weight_decay,
               bint nesterov, bint first_step, int n_threads):
    """In-place SGD step (``buf`` is ignored when ``momentum == 0``)."""
    cdef Py_ssize_t t, i0, n = data.shape[0]
    cdef Py_ssize_t nb = (n + SPAN - 1) // SPAN
    cdef floating wd = <floating> weight_decay, m = <floating> momentum
    cdef floating damp = <floating> (1.0 - dampening), neg_lr = <floating> (-lr)
    cdef bint use_wd = weight_decay != 0, use_m = momentum != 0, use_damp = dampening != 0
    if n == 0:
        return
    cdef floating* d = &data[0]
    cdef const floating* g = &grad[0]
    cdef floating* b = &buf[0]
    for t in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        i0 = t * SPAN
        sgd_span(d + i0, g + i0, b + i0, min(SPAN, n - i0), wd, m, damp, neg_lr, use_wd,
                 use_m, use_damp, nesterov, first_step)


cdef void sgd_many_impl(void** dp, void** gp, void** bp, const Py_ssize_t* off,
                        Py_ssize_t P, Py_ssize_t block, floating wd, floating m,
                        floating damp, floating neg_lr, bint use_wd, bint use_m,
                        bint use_damp, bint nesterov, bint first_step,
                        int n_threads) noexcept nogil:
    """SGD over ``P`` parameters seen as one concatenation of ``off[P]`` elements
    (parameter ``p`` is ``[off[p], off[p + 1])``), cut into tasks of ``block`` elements
    (a task may span several small parameters); elementwise, so the same bits for any
    thread count and any cut."""
    cdef Py_ssize_t t, lo, hi, p, e, k, nb = (off[P] + block - 1) // block
    for t in prange(nb, schedule="static", num_threads=n_threads):
        lo = t * block
        hi = min(lo + block, off[P])
        p = 0                                   # the parameter holding element lo
        k = P
        while p + 1 < k:                        # (binary search: off[p] <= lo < off[k])
            e = (p + k) // 2
            if off[e] <= lo:
                p = e
            else:
                k = e
        while lo < hi:
            while off[p + 1] <= lo:             # (skip empty parameters)
                p = p + 1
            e = min(hi, off[p + 1]) - lo
            k = lo - off[p]
            sgd_span(<floating*> dp[p] + k, <const floating*> gp[p] + k,
                     <floating*> bp[p] + k, e, wd, m, damp, neg_lr, use_wd, use_m,
                     use_damp, nesterov, first_step)
            lo = lo + e


cdef bint usable(object a, Py_ssize_t typenum, Py_ssize_t size, bint write):
    """``a`` is a C-contiguous aligned ndarray of ``typenum`` and ``size`` elements
    (writeable with ``write``)."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_SIZE(arr) != size:
        return False
    if not cnp.PyArray_ISCARRAY_RO(arr):
        return False
    return not write or cnp.PyArray_ISWRITEABLE(arr)


def sgd_update_many(list data, list grad, list buf, double lr, double momentum,
                    double dampening, double weight_decay, bint nesterov, bint first_step,
                    Py_ssize_t block, int n_threads):
    """In-place SGD step of several parameters in one call: ``data[i]``, ``grad[i]``,
    ``buf[i]`` (``buf`` ignored when ``momentum == 0``) arrays of one dtype (float32 or
    float64), the same size per ``i``, C-contiguous and aligned; every element gets the
    operations of :func:`sgd_update`.  The work is cut into tasks of ``block`` elements of
    the parameters' concatenation.  Returns False, with nothing updated, when an array is
    not like that (the caller then updates the parameters one by one)."""
    cdef Py_ssize_t P = len(data), p, n
    if len(grad) != P or len(buf) != P or block < 1:
        raise ValueError(
            f"sgd_update_many(): data, grad and buf must have one array per parameter and "
            f"block must be >= 1. Received: {P}, {len(grad)}, {len(buf)} arrays, block={block}"
        )
    if P == 0:
        return True
    if not cnp.PyArray_Check(data[0]):
        return False
    cdef Py_ssize_t typenum = cnp.PyArray_TYPE(<cnp.ndarray> data[0])
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return False
    cdef bint use_m = momentum != 0
    cdef void** ptrs = <void**> malloc(3 * P * sizeof(void*))
    cdef Py_ssize_t* off = <Py_ssize_t*> malloc((P + 1) * sizeof(Py_ssize_t))
    if ptrs == NULL or off == NULL:
        free(ptrs)
        free(off)
        raise MemoryError()
    try:
        off[0] = 0
        for p in range(P):
            d = data[p]
            if not cnp.PyArray_Check(d):
                return False
            n = cnp.PyArray_SIZE(<cnp.ndarray> d)
            if not (usable(d, typenum, n, True) and usable(grad[p], typenum, n, False)
                    and (not use_m or usable(buf[p], typenum, n, True))):
                return False
            ptrs[p] = cnp.PyArray_DATA(<cnp.ndarray> d)
            ptrs[P + p] = cnp.PyArray_DATA(<cnp.ndarray> grad[p])
            ptrs[2 * P + p] = cnp.PyArray_DATA(<cnp.ndarray> buf[p]) if use_m else ptrs[p]
            off[p + 1] = off[p] + n
        if typenum == cnp.NPY_FLOAT32:
            with nogil:
                sgd_many_impl[float](ptrs, ptrs + P, ptrs + 2 * P, off, P, block,
                                     <float> weight_decay, <float> momentum,
                                     <float> (1.0 - dampening), <float> (-lr),
                                     weight_decay != 0, use_m, dampening != 0, nesterov,
                                     first_step, n_threads)
        else:
            with nogil:
                sgd_many_impl[double](ptrs, ptrs + P, ptrs + 2 * P, off, P, block,
                                      weight_decay, momentum, 1.0 - dampening, -lr,
                                      weight_decay != 0, use_m, dampening != 0, nesterov,
                                      first_step, n_threads)
        return True
    finally:
        free(ptrs)
        free(off)


def adam_update(floating[::1] data, const floating[::1] grad, floating[::1] exp_avg,
                floating[::1] exp_avg_sq, floating[::1] max_exp_avg_sq, double lr,
                double beta1, double beta2, double eps, double weight_decay, bint decoupled,
                double step_size, double bias_correction2_sqrt, int n_threads):
    """In-place Adam/AdamW step (``max_exp_avg_sq`` is None unless amsgrad)."""
    cdef Py_ssize_t i, n = data.shape[0]
    cdef double w1 = 1.0 - beta1
    cdef bint small = abs(w1) < 0.5
    cdef floating lerp_w = <floating> (w1 if small else w1 - 1.0)
    cdef floating b2 = <floating> beta2, one_b2 = <floating> (1.0 - beta2)
    cdef floating decay = <floating> (1.0 - lr * weight_decay), wd = <floating> weight_decay
    cdef floating neg_step = <floating> (-step_size), bc2 = <floating> bias_correction2_sqrt
    cdef floating epsf = <floating> eps
    cdef bint use_wd = weight_decay != 0, amsgrad = max_exp_avg_sq is not None
    cdef floating* mx = &max_exp_avg_sq[0] if amsgrad and n > 0 else NULL
    cdef floating g, d, m, v, t, s, den
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads):
        g = grad[i]
        d = data[i]
        if use_wd:
            if decoupled:
                d = d * decay
            else:
                g = g + d * wd
        m = exp_avg[i]
        t = g - m
        if small:
            m = m + t * lerp_w
        else:
            m = g + t * lerp_w
        exp_avg[i] = m
        v = exp_avg_sq[i] * b2
        s = g * one_b2
        s = s * g
        v = v + s
        exp_avg_sq[i] = v
        if amsgrad:
            v = nan_max(mx[i], v)
            mx[i] = v
        den = sqrt_(v) / bc2 + epsf
        data[i] = d + (m * neg_step) / den
