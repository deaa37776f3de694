"""Fused optimizer updates: one pass over each parameter instead of a dozen NumPy ufunc
passes.  Every element goes through exactly the operations of the NumPy reference in
cnncore/optim.py (and of PyTorch's single-tensor code), in the same order and precision --
scalars are rounded to the parameter's dtype first, and the module is compiled with
``-ffp-contract=off`` so no multiply-add is fused -- so results are bit-identical to it.
Elementwise, hence deterministic for any thread count.
"""

from cython.parallel cimport prange

from cnncore._shared cimport floating


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


def sgd_update(floating[::1] data, const floating[::1] grad, floating[::1] buf,
               double lr, double momentum, double dampening, double weight_decay,
               bint nesterov, bint first_step, int n_threads):
    """In-place SGD step (``buf`` is ignored when ``momentum == 0``)."""
    cdef Py_ssize_t i, n = data.shape[0]
    cdef floating wd = <floating> weight_decay, m = <floating> momentum
    cdef floating damp = <floating> (1.0 - dampening), neg_lr = <floating> (-lr)
    cdef bint use_wd = weight_decay != 0, use_m = momentum != 0, use_damp = dampening != 0
    cdef floating g, b
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads):
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
