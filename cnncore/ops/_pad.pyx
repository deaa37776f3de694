"""2-D padding kernels (constant / replicate / reflect / circular) and their gradients.

Layout is NCHW; only the last two axes are padded.  ``left, right, top, bottom`` are the
per-side pads (PyTorch's ``F.pad`` order is ``(left, right, top, bottom)``); for
``'constant'`` they may be negative, which crops.  Output position ``(oh, ow)`` reads input
position ``(src(oh - top, H), src(ow - left, W))`` where ``src`` maps an out-of-range
coordinate back into ``[0, size)``:

* replicate: clamp to the nearest edge;
* reflect: mirror about the edge without repeating it (``-1 -> 1``); needs ``pad < size``;
* circular: wrap around (``-1 -> size - 1``); needs ``pad <= size``;

and ``'constant'`` writes ``value`` instead.  The gradient adds every output gradient back
into the input position it was read from (sources of the padded border accumulate).

Planes are independent (``prange`` over N*C, disjoint writes) and each backward plane
accumulates in row-major output order, so results are bit-identical for any thread count.
"""

from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from cnncore._shared cimport (PAD_CIRCULAR, PAD_CONSTANT, PAD_REFLECT, PAD_REPLICATE, floating,
                              py_max, py_min)


ctypedef struct PadGeom:
    Py_ssize_t NC, H, W, Ho, Wo
    Py_ssize_t left, top


cdef inline Py_ssize_t src_index(Py_ssize_t i, Py_ssize_t n, int mode) noexcept nogil:
    """Input coordinate read by padded coordinate ``i`` (non-constant modes)."""
    if i < 0:
        if mode == PAD_REPLICATE:
            return 0
        if mode == PAD_REFLECT:
            return -i
        return i + n
    if i >= n:
        if mode == PAD_REPLICATE:
            return n - 1
        if mode == PAD_REFLECT:
            return 2 * (n - 1) - i
        return i - n
    return i


cdef inline void fill(floating* p, Py_ssize_t n, floating v) noexcept nogil:
    cdef Py_ssize_t t
    for t in range(n):
        p[t] = v


cdef void pad_plane(const floating* xp, floating* yp, const PadGeom* g, int mode,
                    floating value) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, lo, hi, W = g.W, Wo = g.Wo, left = g.left
    cdef const floating* xr
    cdef floating* yr
    # output columns [lo, hi) read input columns [lo - left, hi - left)
    lo = py_min(py_max(left, 0), Wo)
    hi = py_min(py_max(W + left, lo), Wo)
    for oh in range(g.Ho):
        yr = yp + oh * Wo
        ih = oh - g.top
        if mode == PAD_CONSTANT:
            if ih < 0 or ih >= g.H:
                fill(yr, Wo, value)
                continue
            fill(yr, lo, value)
            if hi > lo:
                memcpy(yr + lo, xp + ih * W + (lo - left), (hi - lo) * sizeof(floating))
            fill(yr + hi, Wo - hi, value)
            continue
        xr = xp + src_index(ih, g.H, mode) * W
        for ow in range(lo):
            yr[ow] = xr[src_index(ow - left, W, mode)]
        memcpy(yr + lo, xr + (lo - left), (hi - lo) * sizeof(floating))
        for ow in range(hi, Wo):
            yr[ow] = xr[src_index(ow - left, W, mode)]


cdef void pad_backward_plane(const floating* gp, floating* dp, const PadGeom* g,
                             int mode) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, t, lo, hi, W = g.W, Wo = g.Wo, left = g.left
    cdef const floating* gr
    cdef floating* dr
    if mode == PAD_CONSTANT:
        # one-to-one: dx[ih, iw] = g[ih + top, iw + left] where that exists, else 0;
        # input columns [lo, hi) are the ones that survived the (possibly negative) padding
        lo = py_min(py_max(-left, 0), W)
        hi = py_min(py_max(Wo - left, lo), W)
        for ih in range(g.H):
            dr = dp + ih * W
            oh = ih + g.top
            if oh < 0 or oh >= g.Ho:
                memset(dr, 0, W * sizeof(floating))
                continue
            memset(dr, 0, lo * sizeof(floating))
            if hi > lo:
                memcpy(dr + lo, gp + oh * Wo + (lo + left), (hi - lo) * sizeof(floating))
            memset(dr + hi, 0, (W - hi) * sizeof(floating))
        return
    lo = left        # non-constant modes: pads are >= 0
    hi = W + left
    memset(dp, 0, g.H * W * sizeof(floating))
    for oh in range(g.Ho):
        gr = gp + oh * Wo
        dr = dp + src_index(oh - g.top, g.H, mode) * W
        for ow in range(lo):
            dr[src_index(ow - left, W, mode)] += gr[ow]
        for t in range(hi - lo):
            dr[t] += gr[lo + t]
        for ow in range(hi, Wo):
            dr[src_index(ow - left, W, mode)] += gr[ow]


# ------------------------------------------------------------------------------------------
# Thin def wrappers (padding and sizes are validated by cnncore.functional)
# ------------------------------------------------------------------------------------------

def pad2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y_out,
                  Py_ssize_t left, Py_ssize_t top, int mode, double value, int n_threads):
    """Write ``x`` padded by ``(left, top)`` (right/bottom implied by ``y_out``'s shape)."""
    cdef PadGeom g
    cdef Py_ssize_t p, HW, L
    cdef floating v = <floating> value
    g.NC = y_out.shape[0] * y_out.shape[1]
    g.H = x.shape[2]; g.W = x.shape[3]; g.Ho = y_out.shape[2]; g.Wo = y_out.shape[3]
    g.left = left; g.top = top
    HW = g.H * g.W
    L = g.Ho * g.Wo
    if g.NC == 0 or L == 0:
        return
    if HW == 0:    # constant mode only (validated): the output is all padding
        with nogil:
            for p in prange(g.NC * L, schedule="static", num_threads=n_threads):
                (&y_out[0, 0, 0, 0])[p] = v
        return
    with nogil:
        for p in prange(g.NC, schedule="static", num_threads=n_threads):
            pad_plane(&x[0, 0, 0, 0] + p * HW, &y_out[0, 0, 0, 0] + p * L, &g, mode, v)


def pad2d_backward(const floating[:, :, :, ::1] grad_output, floating[:, :, :, ::1] dx_out,
                   Py_ssize_t left, Py_ssize_t top, int mode, int n_threads):
    """Write the gradient of pad2d w.r.t. its input into ``dx_out``."""
    cdef PadGeom g
    cdef Py_ssize_t p, HW, L
    g.NC = dx_out.shape[0] * dx_out.shape[1]
    g.H = dx_out.shape[2]; g.W = dx_out.shape[3]
    g.Ho = grad_output.shape[2]; g.Wo = grad_output.shape[3]
    g.left = left; g.top = top
    HW = g.H * g.W
    L = g.Ho * g.Wo
    if g.NC == 0 or HW == 0:
        return
    if L == 0:     # constant mode only: everything was cropped away
        with nogil:
            memset(&dx_out[0, 0, 0, 0], 0, g.NC * HW * sizeof(floating))
        return
    with nogil:
        for p in prange(g.NC, schedule="static", num_threads=n_threads):
            pad_backward_plane(&grad_output[0, 0, 0, 0] + p * L, &dx_out[0, 0, 0, 0] + p * HW,
                               &g, mode)
