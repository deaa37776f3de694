"""Loss kernels: per-element / per-row loss values, their reduction, and the gradient with
respect to the prediction, all in one pass.

* ``pointwise``: losses of an elementwise prediction/target pair (MSE, L1, binary cross
  entropy with logits and with probabilities, MSLE, MAPE) over flat contiguous arrays, with
  optional per-element ``weight`` (and ``pos_weight`` for BCE with logits) arrays.
* ``cross_entropy``: fused log-softmax + negative log-likelihood over the rows of an
  ``(R, C)`` logits matrix (class indices or class probabilities as target, optional label
  smoothing, per-class ``weight`` and ``ignore_index``).

Each kernel writes the per-element (per-row) losses when asked (``reduction='none'``), adds
them up per task into a ``double`` partial sum, and writes ``gscale * d loss / d prediction``
when asked.  Tasks are fixed-size blocks (elements) or row groups whose size depends only on
the shapes; their partials are added in task order, so results are bit-identical for any
thread count.  Kernels run without the GIL and return a status code: a domain violation
(e.g. a probability outside [0, 1], a class index out of range) is reported, never read.
"""

from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from cnncore._shared cimport (CNN_ERR_INDEX, CNN_ERR_NOMEM, CNN_OK, LOSS_BAD_INPUT,
                              LOSS_BAD_TARGET, LOSS_BCE, LOSS_BCE_WITH_LOGITS, LOSS_L1,
                              LOSS_MAPE, LOSS_MSE, LOSS_MSLE, check_status, floating, py_max,
                              py_min)
from _vmath cimport fabs_, flog, flog1p, row_exp_sum, row_max, row_sum, vexp, vsigmoid

cdef enum:
    # Elements per task of the pointwise kernels.
    BLOCK = 32768
    # Logits per task of the cross-entropy kernel (whole rows; at least one row per task).
    CE_TASK_ELEMS = 16384

# Keras' backend epsilon: the floor of |target| in MAPE's denominator.
cdef double C_MAPE_EPSILON = 1e-7
# PyTorch's floor of p * (1 - p) in the gradient of binary cross entropy (a float constant in
# PyTorch, so 9.99999996e-13 in double precision too).
cdef double C_BCE_GRAD_EPSILON = 1e-12
MAPE_EPSILON = C_MAPE_EPSILON
BCE_GRAD_EPSILON = C_BCE_GRAD_EPSILON


cdef inline floating sign_(floating v) noexcept nogil:
    return (v > 0) - (v < 0)


cdef inline double sum_in_order(const double* partials, Py_ssize_t n) noexcept nogil:
    """The per-task partial sums added in task order (the same for any thread count)."""
    cdef Py_ssize_t i
    cdef double s = 0
    for i in range(n):
        s = s + partials[i]
    return s


# ------------------------------------------------------------------------------------------
# Pointwise losses
# ------------------------------------------------------------------------------------------

cdef int pointwise_block(int kind, const floating* p, const floating* t, const floating* wt,
                         const floating* pw, Py_ssize_t n, floating* loss_out,
                         floating* grad_out, floating gscale, double* partial) noexcept nogil:
    """One block: ``partial[0] = sum of losses``; returns LOSS_BAD_INPUT / LOSS_BAD_TARGET flags.
    ``wt`` (or NULL): per-element weights of the loss (torch's ``weight=``); ``pw`` (or NULL):
    per-element weights of the positive term of BCE with logits (torch's ``pos_weight=``)."""
    cdef Py_ssize_t i
    cdef floating x, y, d, l, g, a, lp, lt, den, ls, q
    cdef double acc = 0
    cdef int bad = 0
    cdef floating log_floor = -100
    cdef floating bce_eps = <floating> (<float> C_BCE_GRAD_EPSILON)  # float 1e-12, as torch
    cdef floating mape_eps = <floating> C_MAPE_EPSILON
    for i in range(n):
        x = p[i]
        y = t[i]
        if kind == LOSS_MSE:
            d = x - y
            l = d * d
            g = 2 * gscale * d                 # torch: (2 / numel) * (input - target)
        elif kind == LOSS_L1:
            d = x - y
            l = fabs_(d)
            g = sign_(d) * gscale
        elif kind == LOSS_BCE_WITH_LOGITS:
            # torch: (1 - t) * x - log_sigmoid(x), log_sigmoid(x) = min(x, 0) - log1p(e^-|x|)
            a = flog1p(vexp(-fabs_(x)))
            ls = (x if x < 0 else 0) - a
            if pw == NULL:
                l = (1 - y) * x - ls
                g = (vsigmoid(x) - y) * gscale
            else:
                # torch: the log-sigmoid term times (pos_weight - 1) * t + 1; its gradient
                # ((pos_weight * t + 1 - t) * sigmoid(x) - pos_weight * t)
                l = (1 - y) * x - ls * ((pw[i] - 1) * y + 1)
                q = pw[i] * y
                g = ((q + 1 - y) * vsigmoid(x) - q) * gscale
        elif kind == LOSS_BCE:
            if not (x >= 0 and x <= 1):
                bad = bad | LOSS_BAD_INPUT
            if not (y >= 0 and y <= 1):
                bad = bad | LOSS_BAD_TARGET
            lp = flog(x)
            lt = flog1p(-x)
            lp = lp if lp > log_floor else log_floor
            lt = lt if lt > log_floor else log_floor
            l = (y - 1) * lt - y * lp
            den = (1 - x) * x
            den = den if den > bce_eps else bce_eps
            g = gscale * (x - y) / den
        elif kind == LOSS_MSLE:
            if x <= -1:
                bad = bad | LOSS_BAD_INPUT
            if y <= -1:
                bad = bad | LOSS_BAD_TARGET
            d = flog1p(x) - flog1p(y)
            l = d * d
            g = 2 * gscale * d / (1 + x)
        else:  # LOSS_MAPE (Keras): 100 * |(t - p) / max(|t|, eps)|
            den = fabs_(y)
            den = den if den > mape_eps else mape_eps
            l = 100 * fabs_((y - x) / den)
            g = 100 * gscale * sign_(x - y) / den
        if wt != NULL:
            l = l * wt[i]
            g = g * wt[i]
        if loss_out != NULL:
            loss_out[i] = l
        if grad_out != NULL:
            grad_out[i] = g
        acc += l
    partial[0] = acc
    return bad


cdef int pointwise_impl(int kind, const floating* p, const floating* t, const floating* wt,
                        const floating* pw, Py_ssize_t n, floating* loss_out,
                        floating* grad_out, floating gscale, double* total,
                        int n_threads) noexcept nogil:
    cdef Py_ssize_t n_blocks = (n + BLOCK - 1) // BLOCK
    cdef Py_ssize_t b, lo
    cdef int bad = 0
    cdef int flags
    cdef double* partials = <double*> malloc(n_blocks * sizeof(double))
    if partials == NULL:
        return CNN_ERR_NOMEM
    for b in prange(n_blocks, schedule="static", num_threads=py_min(n_threads, n_blocks)):
        lo = b * BLOCK
        flags = pointwise_block(kind, p + lo, t + lo, wt + lo if wt != NULL else NULL,
                                pw + lo if pw != NULL else NULL, py_min(BLOCK, n - lo),
                                loss_out + lo if loss_out != NULL else NULL,
                                grad_out + lo if grad_out != NULL else NULL, gscale,
                                partials + b)
        bad |= flags                           # OpenMP reduction (order-free: bitwise or)
    total[0] = sum_in_order(partials, n_blocks)
    free(partials)
    return bad


# ------------------------------------------------------------------------------------------
# Cross entropy over the rows of (R, C) logits
# ------------------------------------------------------------------------------------------

cdef int ce_row(const floating* x, Py_ssize_t C, int64_t label, const floating* prob,
                const floating* weight, int64_t ignore_index, floating smoothing,
                floating* grad, floating gscale, floating* loss) noexcept nogil:
    """Loss of one row (written to ``loss[0]``) and, unless ``grad`` is NULL, ``gscale`` times
    its gradient.  ``prob`` NULL: class-index target ``label``.  ``weight`` (C,) or NULL:
    per-class rescaling weights, as torch's ``weight=``."""
    cdef Py_ssize_t c
    cdef floating m, s, ls, inv, mass, w, uni, wy
    cdef double acc
    if prob == NULL and label == ignore_index:
        loss[0] = 0
        if grad != NULL:
            memset(grad, 0, C * sizeof(floating))
        return CNN_OK
    if prob == NULL and (label < 0 or label >= C):
        return CNN_ERR_INDEX
    m = row_max(x, C)
    s = row_exp_sum(x, m, grad, C)             # grad <- exp(x - m) when wanted
    ls = flog(s)                               # log-sum-exp = m + ls
    uni = smoothing / C
    if prob == NULL and weight == NULL:
        # -log p_c = (m - x_c) + ls;  loss = (1 - eps) (-log p_t) + eps * mean_c(-log p_c)
        loss[0] = (1 - smoothing) * ((m - x[label]) + ls)
        if smoothing != 0:
            loss[0] += smoothing * ((m - row_sum(x, C) / C) + ls)
        if grad != NULL:
            inv = gscale / s
            w = gscale * uni
            for c in range(C):
                grad[c] = grad[c] * inv - w
            grad[label] -= gscale * (1 - smoothing)
        return CNN_OK
    if prob == NULL:
        # Weighted (torch): loss = (1 - eps) w_t (-log p_t) + eps / C * sum_c w_c (-log p_c),
        # i.e. target weights a_c = (1 - eps) w_t [c == t] + eps / C * w_c.
        wy = weight[label]
        loss[0] = (1 - smoothing) * wy * ((m - x[label]) + ls)
        mass = (1 - smoothing) * wy
        if smoothing != 0:
            acc = 0
            w = 0
            for c in range(C):
                acc += weight[c] * ((m - x[c]) + ls)
                w = w + weight[c]
            loss[0] += <floating> (uni * acc)
            mass = mass + uni * w
        if grad != NULL:
            inv = gscale * mass / s
            for c in range(C):
                grad[c] = grad[c] * inv - gscale * uni * weight[c]
            grad[label] -= gscale * (1 - smoothing) * wy
        return CNN_OK
    # Probability target, smoothed (and weighted): w_c = ((1 - eps) t_c + eps / C) weight_c.
    acc = 0
    mass = 0
    for c in range(C):
        w = (1 - smoothing) * prob[c] + uni
        if weight != NULL:
            w = w * weight[c]
        acc += w * ((m - x[c]) + ls)
        mass += w
    loss[0] = <floating> acc
    if grad != NULL:
        inv = gscale * mass / s
        for c in range(C):
            w = (1 - smoothing) * prob[c] + uni
            if weight != NULL:
                w = w * weight[c]
            grad[c] = grad[c] * inv - gscale * w
    return CNN_OK


cdef int ce_impl(const floating* x, Py_ssize_t R, Py_ssize_t C, const int64_t* labels,
                 const floating* probs, const floating* weight, int64_t ignore_index,
                 floating smoothing,
                 floating* loss_out, floating* grad_out, floating gscale, double* total,
                 int n_threads) noexcept nogil:
    cdef Py_ssize_t rows = py_max(1, CE_TASK_ELEMS // py_max(1, C))
    cdef Py_ssize_t n_tasks = (R + rows - 1) // rows
    cdef Py_ssize_t t, r, r0, r1
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef int st
    cdef floating row_loss
    cdef double acc
    cdef double* partials = <double*> malloc(n_tasks * sizeof(double))
    if partials == NULL:
        return CNN_ERR_NOMEM
    with parallel(num_threads=py_min(n_threads, n_tasks)):
        for t in prange(n_tasks, schedule="static"):
            r0 = t * rows
            r1 = py_min(R, r0 + rows)
            acc = 0
            for r in range(r0, r1):
                st = ce_row(x + r * C, C, labels[r] if labels != NULL else 0,
                            probs + r * C if probs != NULL else NULL, weight, ignore_index,
                            smoothing,
                            grad_out + r * C if grad_out != NULL else NULL, gscale, &row_loss)
                if st != CNN_OK:
                    status_p[0] = st
                    row_loss = 0
                if loss_out != NULL:
                    loss_out[r] = row_loss
                acc = acc + row_loss
            partials[t] = acc
    total[0] = sum_in_order(partials, n_tasks)
    free(partials)
    return status


# ------------------------------------------------------------------------------------------
# Thin def wrappers (validated by cnncore.functional; empty arrays never get here)
# ------------------------------------------------------------------------------------------


def pointwise(int kind, const floating[::1] input, const floating[::1] target,
              floating[::1] loss_out, floating[::1] grad_out, double gscale, int n_threads,
              const floating[::1] weight=None, const floating[::1] pos_weight=None):
    """Return ``(sum of losses, domain flags)``; fill ``loss_out`` / ``grad_out`` (each may
    be None) with the per-element losses and ``gscale * d loss / d input``.  ``weight``
    (or None) rescales each element's loss; ``pos_weight`` (or None; BCE with logits) the
    positive term of each element (both of ``input``'s length)."""
    cdef Py_ssize_t n = input.shape[0]
    cdef floating* lp
    cdef floating* gp
    cdef const floating* wp
    cdef const floating* pwp
    cdef double total = 0
    cdef int status
    if (weight is not None and weight.shape[0] != n) or (
            pos_weight is not None and pos_weight.shape[0] != n):
        raise ValueError("pointwise(): weight and pos_weight must have the input's length")
    if n == 0:  # (before taking element addresses: there are none)
        return 0.0, 0
    lp = &loss_out[0] if loss_out is not None else NULL
    gp = &grad_out[0] if grad_out is not None else NULL
    wp = &weight[0] if weight is not None else NULL
    pwp = &pos_weight[0] if pos_weight is not None else NULL
    with nogil:
        status = pointwise_impl(kind, &input[0], &target[0], wp, pwp, n, lp, gp,
                                <floating> gscale, &total, n_threads)
    if status < 0:
        check_status(status, "loss")
    return total, status


def cross_entropy(const floating[:, ::1] logits, const int64_t[::1] labels,
                  const floating[:, ::1] probs, const floating[::1] weight,
                  int64_t ignore_index, double label_smoothing,
                  floating[::1] loss_out, floating[:, ::1] grad_out, double gscale,
                  int n_threads):
    """Cross entropy of each row of ``logits`` (R, C) against ``labels`` (R,) or ``probs``
    (R, C) (exactly one is given), each class rescaled by ``weight`` (C,) when given.  Returns
    the sum of the row losses; fills ``loss_out`` (R,) and ``grad_out`` (R, C) when given.
    Raises IndexError for a label outside [0, C)."""
    cdef Py_ssize_t R = logits.shape[0], C = logits.shape[1]
    cdef const int64_t* lab
    cdef const floating* pr
    cdef const floating* wp
    cdef floating* lp
    cdef floating* gp
    cdef double total = 0
    cdef int status
    if R == 0 or C == 0:  # (before taking element addresses: there are none)
        return 0.0
    lab = &labels[0] if labels is not None else NULL
    pr = &probs[0, 0] if probs is not None else NULL
    wp = &weight[0] if weight is not None else NULL
    lp = &loss_out[0] if loss_out is not None else NULL
    gp = &grad_out[0, 0] if grad_out is not None else NULL
    with nogil:
        status = ce_impl(&logits[0, 0], R, C, lab, pr, wp, ignore_index,
                         <floating> label_smoothing, lp, gp, <floating> gscale, &total,
                         n_threads)
    if status == CNN_ERR_INDEX:
        raise IndexError("cross_entropy(): a class index in target is out of range")
    check_status(status, "cross_entropy")
    return total
